//! The one place that maps `--backend` and `--device` to a backend type.

/// Runs `$body` with `$B` bound to the backend `--backend` and `--device` name and `$dev` to
/// its device.
macro_rules! on_backend {
    ($env:expr, $B:ident, $dev:ident => $body:expr) => {{
        use $crate::args::{BackendArg, Device};
        match ($env.backend, $env.device) {
            (BackendArg::Flex, Device::Cpu) => {
                type $B = obliviate::CpuBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            (BackendArg::Flex, Device::Cuda) => {
                type $B = obliviate::CudaBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            (BackendArg::Flex, Device::Cuda) => anyhow::bail!(
                "--device cuda needs a build with CUDA support: cargo build --release --features cuda"
            ),
            #[cfg(feature = "tch")]
            (BackendArg::Tch, device) => {
                type $B = obliviate::TchBackend;
                let $dev = match device {
                    Device::Cpu => obliviate::TchDevice::Cpu,
                    Device::Cuda => obliviate::TchDevice::Cuda(0),
                };
                $body
            }
            #[cfg(not(feature = "tch"))]
            (BackendArg::Tch, _) => anyhow::bail!(
                "--backend tch needs a build with libtorch: see the README (LIBTORCH_USE_PYTORCH=1 cargo build --release --features tch)"
            ),
        }
    }};
}

pub(crate) use on_backend;
