//! The one place that maps `--device` to a backend type.

/// Runs `$body` with `$B` bound to the backend `--device` names and `$dev` to its device.
macro_rules! on_backend {
    ($env:expr, $B:ident, $dev:ident => $body:expr) => {{
        match $env.device {
            $crate::args::Device::Cpu => {
                type $B = obliviate::CpuBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::args::Device::Cuda => {
                type $B = obliviate::CudaBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::args::Device::Cuda => anyhow::bail!(
                "--device cuda needs a build with CUDA support: cargo build --release --features cuda"
            ),
        }
    }};
}

pub(crate) use on_backend;
