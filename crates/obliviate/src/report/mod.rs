//! Figures and reports about runs and requests.

pub mod plot;
