//! How our own tract matmul ops (`tract_i8_matmul`, `tract_q4_matmul`) use tract's thread pool:
//! whether a matmul is worth waking other threads for, and running its parts there.

use std::ops::Range;

use tract_linalg::multithread::{Executor, current_tract_executor};

/// The fewest multiply-adds worth waking other threads for: below it, a decode step's matmuls
/// ran no faster on two threads than on one (waking the pool cost what the second thread saved).
pub(crate) const PARALLEL_MACS: usize = 4 << 20;

/// Parallel tasks per thread, to even out a slow one.
pub(crate) const TASKS_PER_THREAD: usize = 4;

/// tract's executor for the calling thread (the one `multithread_tract_scope` or the default
/// sets), as one op evaluation uses it.
pub(crate) struct Threads {
    executor: Executor,
}

impl Threads {
    /// The executor tract would run its own kernels on from this thread.
    pub(crate) fn current() -> Threads {
        Threads { executor: current_tract_executor() }
    }

    /// Threads in tract's pool: 1 without one.
    pub(crate) fn count(&self) -> usize {
        match &self.executor {
            Executor::MultiThread(pool) => pool.current_num_threads(),
            _ => 1,
        }
    }

    /// Whether a matmul of `macs` multiply-adds goes to the pool: there is one, of more than one
    /// thread, and `macs` is at least [`PARALLEL_MACS`].
    pub(crate) fn worth(&self, macs: usize) -> bool {
        self.count() > 1 && macs >= PARALLEL_MACS
    }

    /// `work(item)` for every item, on the pool's threads where there is a pool (returning once
    /// all are done), else in turn on this one.
    pub(crate) fn spawn_each<I: Send>(&self, items: impl IntoIterator<Item = I> + Send, work: impl Fn(I) + Sync) {
        match &self.executor {
            Executor::MultiThread(pool) => pool.scope(|s| {
                let work = &work;
                for item in items {
                    s.spawn(move |_| work(item));
                }
            }),
            _ => items.into_iter().for_each(work),
        }
    }

    /// `y` (`[m, n]`, row-major) in parts of its columns: `run(columns, out)` fills `out`
    /// (`[m, columns.len()]`, a buffer of its own) for each range of `tasks`, on the pool if
    /// `parallel`, else in turn on this thread; each part is then copied into place.
    pub(crate) fn split_columns<T: Copy + Default + Send>(
        &self,
        parallel: bool,
        (m, n): (usize, usize),
        tasks: &[Range<usize>],
        y: &mut [T],
        run: impl Fn(Range<usize>, &mut [T]) + Sync,
    ) {
        let mut results: Vec<Vec<T>> = vec![Vec::new(); tasks.len()];
        let work = |(columns, result): (&Range<usize>, &mut Vec<T>)| {
            let mut out = vec![T::default(); m * columns.len()];
            run(columns.clone(), &mut out);
            *result = out;
        };
        if parallel {
            self.spawn_each(tasks.iter().zip(results.iter_mut()), work);
        } else {
            tasks.iter().zip(results.iter_mut()).for_each(work);
        }
        for (columns, result) in tasks.iter().zip(&results) {
            if columns.is_empty() {
                continue;
            }
            for (row, values) in result.chunks_exact(columns.len()).enumerate() {
                y[row * n + columns.start..row * n + columns.end].copy_from_slice(values);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::multithread_tract_scope;

    #[test]
    fn split_columns_puts_every_part_in_its_place_on_any_executor() {
        let (m, n) = (3, 50);
        let want: Vec<usize> = (0..m * n).map(|i| (i / n) * 1000 + i % n).collect();
        let tasks: Vec<Range<usize>> = (0..n).step_by(16).map(|c| c..(c + 16).min(n)).collect();
        for executor in [Executor::SingleThread, Executor::multithread(2)] {
            for parallel in [false, true] {
                let mut y = vec![0usize; m * n];
                multithread_tract_scope(executor.clone(), || {
                    Threads::current().split_columns(parallel, (m, n), &tasks, &mut y, |columns, out| {
                        for (row, out) in out.chunks_exact_mut(columns.len()).enumerate() {
                            for (value, column) in out.iter_mut().zip(columns.clone()) {
                                *value = row * 1000 + column;
                            }
                        }
                    })
                });
                assert_eq!(y, want, "parallel {parallel}");
            }
        }
    }

    #[test]
    fn only_a_pool_of_two_or_more_threads_is_worth_it() {
        multithread_tract_scope(Executor::SingleThread, || assert!(!Threads::current().worth(usize::MAX)));
        multithread_tract_scope(Executor::multithread(2), || {
            let threads = Threads::current();
            assert_eq!(threads.count(), 2);
            assert!(threads.worth(PARALLEL_MACS) && !threads.worth(PARALLEL_MACS - 1));
        });
    }
}
