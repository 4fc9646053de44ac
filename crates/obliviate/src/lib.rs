//! obliviate: machine unlearning for deep networks (DeepObliviate, He et al. 2021, and beyond).
//!
//! Train a network block by block while storing each block's parameter increment; to forget
//! samples, retrain from the first affected block only until the residual memory of the old
//! increments has decayed, then stitch the remaining stored increments back on.
//!
//! Start at [`train::train`] and [`unlearn::forget`]; [`chain`] is the on-disk format.

#![forbid(unsafe_code)]

pub mod audit;
pub mod baselines;
pub mod chain;
pub mod data;
pub mod error;
pub mod experiments;
pub mod model;
pub mod optim;
pub mod params;
pub mod report;
pub mod store;
pub mod train;
pub mod unlearn;

pub use error::{Error, Result};

/// The default CPU backend (pure Rust), with autodiff.
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// burn's CUDA backend, with autodiff (`--features cuda`).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// burn's libtorch backend, with autodiff (`--features tch`; CPU or CUDA by its device).
#[cfg(feature = "tch")]
pub type TchBackend = burn::backend::Autodiff<burn::backend::LibTorch<f32>>;

/// [`TchBackend`]'s device.
#[cfg(feature = "tch")]
pub use burn::backend::libtorch::LibTorchDevice as TchDevice;
