//! Where a run's data came from: the canonical dataset, cut to a prefix and/or poisoned by a
//! backdoored user. Runs record it so that every later command rebuilds exactly the same data.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::backdoor::Backdoor;
use super::{Dataset, DatasetName};
use crate::error::{Error, Result};
use crate::model::InputShape;

/// How a dataset derives from the canonical files: a prefix and/or a backdoored user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataOrigin {
    /// Only the first (train, test) samples.
    pub limit: Option<(usize, usize)>,
    /// A poisoned user.
    pub backdoor: Option<Backdoor>,
}

/// Identity of the training data a folder was built on, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Dataset name.
    pub name: DatasetName,
    /// SHA-256 over the decoded samples ([`Dataset::fingerprint`]).
    pub fingerprint: String,
    /// Training samples when the run was created.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Input geometry.
    pub shape: InputShape,
    /// Classes.
    pub classes: usize,
    /// When set, only the first N training / test samples were used.
    #[serde(default)]
    pub limit: Option<(usize, usize)>,
    /// When set, these training samples carried a backdoor trigger (`verify backdoor`).
    #[serde(default)]
    pub backdoor: Option<Backdoor>,
}

impl DatasetRecord {
    /// The record of `data`, including how it derives from the canonical files.
    pub fn of(data: &Dataset) -> DatasetRecord {
        DatasetRecord {
            name: data.name,
            fingerprint: data.fingerprint.clone(),
            train_samples: data.train.len(),
            test_samples: data.test.len(),
            shape: data.shape,
            classes: data.classes,
            limit: data.origin.limit,
            backdoor: data.origin.backdoor.clone(),
        }
    }

    /// How the training data was derived from the canonical files.
    pub fn origin(&self) -> DataOrigin {
        DataOrigin {
            limit: self.limit,
            backdoor: self.backdoor.clone(),
        }
    }

    /// Loads the canonical files from `dir`, derives the recorded data from them and checks its
    /// fingerprint; `folder` (the run or ensemble) names the culprit in errors.
    pub fn load(&self, dir: Option<&Path>, folder: &Path) -> Result<Dataset> {
        let data = Dataset::load(self.name, dir)?.derive(&self.origin())?;
        self.check(&data, folder)?;
        Ok(data)
    }

    /// Fails unless `data` is the dataset this record describes.
    pub fn check(&self, data: &Dataset, folder: &Path) -> Result<()> {
        if self.name == data.name && self.fingerprint == data.fingerprint {
            return Ok(());
        }
        Err(Error::Chain {
            run: folder.to_path_buf(),
            detail: format!(
                "was trained on {} (fingerprint {}), but the data given is {} (fingerprint {})",
                self.name,
                &self.fingerprint[..12.min(self.fingerprint.len())],
                data.name,
                &data.fingerprint[..12.min(data.fingerprint.len())]
            ),
        })
    }
}
