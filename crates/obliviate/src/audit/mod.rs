//! Evidence that forgetting worked: model outputs, membership inference, distances.

pub mod mia;
pub mod outputs;
pub mod stats;

pub use outputs::{Outputs, outputs, outputs_of};
