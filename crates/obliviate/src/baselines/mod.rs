//! The rival unlearning methods, built natively on the same models, data and optimizers so a
//! comparison measures the methods and nothing else.
//!
//! | method | module | guarantee |
//! |---|---|---|
//! | SISA (Bourtoule et al. 2021) | [`sisa`] | exact: every constituent model is what training without the ids would give |
//! | Amnesiac (Graves et al. 2021) | [`amnesiac`] | approximate: subtracts the recorded updates of the batches that held the ids |
//! | Fine-tune | [`steps`] | approximate, no guarantee: catastrophic forgetting by training on the rest |
//! | NegGrad+ (Kurmanji et al. 2023) | [`steps`] | approximate, no guarantee: ascends the loss on the ids while descending on the rest |

pub mod amnesiac;
pub mod sisa;
pub mod steps;
