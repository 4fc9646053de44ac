//! Figures and reports about runs and requests.

pub mod page;
pub mod plot;
