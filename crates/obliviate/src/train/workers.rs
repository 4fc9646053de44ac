//! The threads a trainer's burn autodiff work runs on: rayon pools that only this trainer uses.
//!
//! Why: burn-flex runs its larger kernels (matrix products, convolutions, reductions) on rayon,
//! and burn-autodiff holds a graph's lock while a backward pass runs those kernels, then ends
//! every backward pass by locking every graph of the process in turn. Autodiff work on a pool
//! that also runs other autodiff work can therefore wait for a lock held by a thread that waits
//! for that pool: with the micro-batch slices on rayon's global pool the test suite deadlocked
//! (a slice's cleanup waiting for a graph whose backward pass waited for the pool the slices
//! occupied). Here each trainer owns its pools, and no other work is ever queued on them, so a
//! worker holding a graph's lock only ever runs kernel pieces of its own pass.
//!
//! Whole minibatches run on the caller's thread, and flex spreads each large kernel over
//! rayon's global pool, whose workers never run autodiff work and so never wait for a graph's
//! lock; the caller's thread also keeps batch norm's running statistics, which burn-core keys by
//! thread, on one key. `N` slices run on `N` pools of one thread, each slice always on the same
//! one, where each slice's kernels run one after another (measured: flex spreading LeNet-5's
//! small kernels over both cores trains slower than two slices on one core each; ARCHITECTURE
//! decision 22).

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

/// One pool of one thread per slice; none for whole minibatches.
pub(super) struct Workers {
    pools: Vec<ThreadPool>,
}

impl Workers {
    /// Pools for minibatches computed in `slices` slices.
    pub(super) fn new(slices: usize) -> Result<Self> {
        let pools = match slices {
            0 | 1 => Vec::new(),
            n => (0..n)
                .map(|i| {
                    ThreadPoolBuilder::new()
                        .num_threads(1)
                        .thread_name(move |_| format!("obliviate-slice-{i}"))
                        .build()
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Backend(format!("starting the slices' threads: {e}")))?,
        };
        Ok(Workers { pools })
    }

    /// `f(0), f(1), …, f(n − 1)` at once, `f(i)` on pool `i`; one job without pools runs
    /// here. A panic in any of them is raised here once all have ended. Two jobs never share a
    /// pool (one could run inside the other's backward pass and wait for its lock), so `n` may
    /// not exceed the pools.
    pub(super) fn map<R: Send>(&self, n: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        if self.pools.is_empty() && n == 1 {
            return vec![f(0)];
        }
        assert!(
            n <= self.pools.len(),
            "{n} jobs for {} pools",
            self.pools.len()
        );
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        spread(&self.pools[..n], &mut out, f);
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| unreachable!("every slot is filled before `spread` returns"))
            })
            .collect()
    }
}

/// Fills `out[i]` with `f(i)` on `pools[i]`: the last pool's job is spawned, then the others
/// are spread while it runs, down to the first, which runs on its pool while this thread waits.
fn spread<R: Send>(pools: &[ThreadPool], out: &mut [Option<R>], f: &(dyn Fn(usize) -> R + Sync)) {
    let (Some((pool, pools)), Some((slot, rest))) = (pools.split_last(), out.split_last_mut())
    else {
        return;
    };
    let i = pools.len();
    if i == 0 {
        *slot = Some(pool.install(|| f(0)));
        return;
    }
    pool.in_place_scope(|s| {
        s.spawn(move |_| *slot = Some(f(i)));
        spread(pools, rest, f);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index runs once, on its own pool's thread, and the results come back in order.
    #[test]
    fn each_slice_runs_on_its_own_pool() {
        let workers = Workers::new(3).expect("pools");
        let out = workers.map(3, &|i| {
            (i, std::thread::current().name().map(str::to_owned))
        });
        let names: Vec<_> = out
            .iter()
            .map(|(_, n)| n.clone().unwrap_or_default())
            .collect();
        assert_eq!(out.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            names,
            [
                "obliviate-slice-0",
                "obliviate-slice-1",
                "obliviate-slice-2"
            ]
        );
        // Fewer jobs than pools use the first pools.
        assert_eq!(workers.map(1, &|i| i), [0]);
        let whole = Workers::new(1).expect("no pools");
        let here = std::thread::current().id();
        assert_eq!(whole.map(1, &|_| std::thread::current().id()), [here]);
    }

    /// A panicking slice is raised to the caller after the others finish.
    #[test]
    fn a_panic_reaches_the_caller() {
        let workers = Workers::new(2).expect("pools");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            workers.map(2, &|i| {
                assert!(i != 1, "slice 1 fails");
                i
            })
        }));
        assert!(caught.is_err());
        // The pools still work afterwards.
        assert_eq!(workers.map(2, &|i| i * 10), [0, 10]);
    }
}
