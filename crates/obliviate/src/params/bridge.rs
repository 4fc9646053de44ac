//! Moves tensors between burn modules and host [`ParamSet`]s, by module path.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::Backend;
use burn::tensor::{Tensor, TensorData};

use super::{NamedTensor, ParamSet};
use crate::error::{Result, invalid};

/// Tracks the dotted module path during a visit; enum variants add no path component so that a
/// model's tensor names do not depend on how the model enum is spelled.
#[derive(Default)]
pub(crate) struct PathStack {
    parts: Vec<(String, bool)>,
}

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container: &str) {
        self.parts
            .push((name.to_string(), container.starts_with("Enum:")));
    }
    pub(crate) fn exit(&mut self) {
        self.parts.pop();
    }
    pub(crate) fn name(&self) -> String {
        let kept: Vec<&str> = self
            .parts
            .iter()
            .filter(|(_, is_variant)| !is_variant)
            .map(|(n, _)| n.as_str())
            .collect();
        kept.join(".")
    }
    /// Container type of the innermost struct (the one holding the visited tensor).
    pub(crate) fn leaf(&self) -> Option<&str> {
        self.parts.last().map(|(n, _)| n.as_str())
    }
}

struct Extractor {
    path: PathStack,
    out: Vec<NamedTensor>,
    trainable: Vec<bool>,
}

impl<B: Backend> ModuleVisitor<B> for Extractor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        self.trainable.push(tensor.is_require_grad());
        let shape = tensor.dims().to_vec();
        let data = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        self.out.push(NamedTensor {
            name: self.path.name(),
            shape,
            data,
        });
    }
}

/// Copies every float tensor of `module` (parameters and buffers) to the host.
///
/// Batch norm's running statistics are brought up to date first: burn keeps a forward pass's
/// update pending until the next forward reads it, and a visit reads the stale value, so θ
/// would miss each block's last update while the live model kept it (and a forget restoring
/// θ from the chain would no longer equal retraining).
pub fn extract<B: Backend, M: Module<B>>(module: &M) -> ParamSet {
    // Turning a clone into a record folds every pending update in; clones share the state.
    drop(module.clone().into_record());
    let mut v = Extractor {
        path: PathStack::default(),
        out: Vec::new(),
        trainable: Vec::new(),
    };
    module.visit(&mut v);
    ParamSet { tensors: v.out }
}

/// For each tensor of `module` in visit order, whether it is trained by gradient (false for
/// buffers such as batch-norm running statistics).
pub fn trainable_mask<B: Backend, M: Module<B>>(module: &M) -> Vec<bool> {
    struct Mask(Vec<bool>);
    impl<B: Backend> ModuleVisitor<B> for Mask {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().is_require_grad());
        }
    }
    let mut m = Mask(Vec::new());
    module.visit(&mut m);
    m.0
}

struct Loader<'a, B: Backend> {
    path: PathStack,
    set: &'a ParamSet,
    next: usize,
    device: B::Device,
    error: Option<String>,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let index = self.next;
        self.next += 1;
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let name = self.path.name();
        let Some(src) = self.set.tensors.get(index) else {
            self.error = Some(format!(
                "no tensor for {name} (set has {})",
                self.set.tensors.len()
            ));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let dims = tensor.dims().to_vec();
        if src.name != name || src.shape != dims {
            self.error = Some(format!(
                "tensor #{index} is {} {:?} but the model expects {name} {dims:?}",
                src.name, src.shape
            ));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let mut new =
            Tensor::<B, D>::from_data(TensorData::new(src.data.clone(), dims), &self.device);
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Replaces every float tensor of `module` with the values in `set`, which must match the
/// module's names and shapes exactly (the chain-does-not-match-model check).
pub fn load_into<B: Backend, M: Module<B>>(
    module: M,
    set: &ParamSet,
    device: &B::Device,
) -> Result<M> {
    let mut loader = Loader::<B> {
        path: PathStack::default(),
        set,
        next: 0,
        device: device.clone(),
        error: None,
    };
    let module = module.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(invalid("parameters", e));
    }
    if loader.next != set.tensors.len() {
        return Err(invalid(
            "parameters",
            format!(
                "the model has {} tensors, the set {}",
                loader.next,
                set.tensors.len()
            ),
        ));
    }
    Ok(module)
}
