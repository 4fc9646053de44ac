//! Evidence that forgetting worked: model outputs, membership inference, distances, backdoors.

pub mod backdoor;
pub mod mia;
pub mod outputs;
pub mod stats;
pub mod verify;

pub use outputs::{Outputs, outputs, outputs_of};
