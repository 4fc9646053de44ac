//! One module per command: its flags and how it renders the library's answer.

pub mod audit;
pub mod bench;
pub mod check;
pub mod data;
pub mod demo;
pub mod eval;
pub mod forget;
pub mod info;
pub mod receipts;
pub mod report;
pub mod retrain;
pub mod serve;
pub mod sisa;
pub mod train;
pub mod verify;
