//! Deterministic, backend-independent weight initialisation.
//!
//! burn's initialisers draw from a process-global RNG, which concurrent trainings (tests, a
//! server) would share. obliviate instead draws each tensor from its own ChaCha8 stream keyed by
//! (seed, tensor name), so θ_0 depends only on the seed and is the same on CPU and GPU.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::params::bridge::PathStack;

struct Init {
    path: PathStack,
    containers: Vec<String>,
    seed: u64,
    fan_in: usize,
}

/// 64-bit FNV-1a, to key a random stream by tensor name.
pub(crate) fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Uniform values in (-bound, bound) from a stream keyed by (seed, name).
pub(crate) fn uniform(seed: u64, name: &str, n: usize, bound: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name).rotate_left(17));
    (0..n)
        .map(|_| {
            // 24 random mantissa bits -> [0, 1), then to [-bound, bound).
            let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
            (2.0 * u - 1.0) * bound
        })
        .collect()
}

impl<B: Backend> ModuleMapper<B> for Init {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
        self.containers.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let container = self.containers.last().map(String::as_str).unwrap_or("");
        let leaf = self.path.leaf().unwrap_or("");
        let dims = tensor.dims().to_vec();
        let layer = matches!(container, "Struct:Linear" | "Struct:Conv2d");
        if !layer || !(leaf == "weight" || leaf == "bias") {
            // Batch-norm affine parameters and running statistics keep their constant init.
            return Param::from_mapped_value(id, tensor, mapper);
        }
        if leaf == "weight" {
            self.fan_in = match (container, dims.len()) {
                ("Struct:Linear", 2) => dims[0],
                ("Struct:Conv2d", 4) => dims[1] * dims[2] * dims[3],
                _ => dims.iter().skip(1).product::<usize>().max(1),
            };
        }
        let bound = 1.0 / (self.fan_in.max(1) as f32).sqrt();
        let n: usize = dims.iter().product();
        let values = uniform(self.seed, &self.path.name(), n, bound);
        let device = tensor.device();
        let require_grad = tensor.is_require_grad();
        let mut new = Tensor::<B, D>::from_data(TensorData::new(values, dims), &device);
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Overwrites every linear and convolution weight and bias of `module` from `seed`.
pub(crate) fn initialize<B: Backend, M: Module<B>>(module: M, seed: u64, _device: &B::Device) -> M {
    let mut init = Init {
        path: PathStack::default(),
        containers: Vec::new(),
        seed,
        fan_in: 1,
    };
    module.map(&mut init)
}
