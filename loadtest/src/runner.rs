//! Runs a plan: every scenario's executor from its start time, concurrently, recording into one
//! [`Recorder`].
//!
//! Arrival-rate executors are open: a scheduler wakes at each iteration's due time and hands it
//! to a free VU (at most `max_vus` run at once); when none is free the iteration is counted in
//! `dropped_iterations`, never delayed, and an iteration that starts late is measured from when
//! it was due. VU executors are closed: each VU runs iterations back to back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::driver::Driver;
use crate::metrics::Recorder;
use crate::scenario::{Executor, Scenario};
use crate::schedule::ramping_vus;

/// How long iterations still running when a scenario's time is up may take to finish.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(30);

/// VUs running and allocated, across scenarios, for the `vus` gauges and the progress line.
#[derive(Default)]
pub struct Vus {
    /// Running an iteration now.
    pub running: AtomicU64,
    /// Allocated so far (what `vus_max` reports).
    pub allocated: AtomicU64,
}

/// Counts one running VU while it lives (an abandoned iteration stops counting too).
struct Running(Arc<Vus>);

impl Running {
    fn start(vus: Arc<Vus>) -> Running {
        vus.running.fetch_add(1, Ordering::Relaxed);
        Running(vus)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `scenario` with `driver` from `start`, recording into `recorder`.
pub async fn run_scenario(
    scenario: &Scenario,
    driver: Arc<Driver>,
    recorder: Arc<Recorder>,
    vus: Arc<Vus>,
    start: Instant,
) {
    let begin = start + scenario.start_time;
    tokio::time::sleep_until(begin).await;
    let tags = driver.tags().clone();
    let iteration = {
        let (driver, recorder, vus, tags) = (
            Arc::clone(&driver),
            Arc::clone(&recorder),
            Arc::clone(&vus),
            tags.clone(),
        );
        move |due: Instant, mut rng: SmallRng| {
            let (driver, recorder, vus, tags) = (
                Arc::clone(&driver),
                Arc::clone(&recorder),
                Arc::clone(&vus),
                tags.clone(),
            );
            async move {
                let _running = Running::start(vus);
                let started = driver.iteration(due.into_std(), &mut rng).await;
                recorder.iteration(&tags, started.elapsed());
            }
        }
    };
    let rng = || SmallRng::from_rng(&mut rand::rng());
    match &scenario.executor {
        Executor::ArrivalRate {
            arrivals,
            pre_allocated_vus,
            max_vus,
        } => {
            vus.allocated
                .fetch_add(u64::from(*pre_allocated_vus), Ordering::Relaxed);
            let mut allocated = u64::from(*pre_allocated_vus);
            let pool = Arc::new(Semaphore::new(*max_vus as usize));
            // Set once the graceful stop is over: iterations still running are abandoned.
            let (abandon, abandoned) = tokio::sync::watch::channel(false);
            let mut n = 0u64;
            while let Some(due) = arrivals.due(n) {
                n += 1;
                let at = begin + due;
                tokio::time::sleep_until(at).await;
                match Arc::clone(&pool).try_acquire_owned() {
                    Ok(permit) => {
                        let busy = u64::from(*max_vus) - pool.available_permits() as u64;
                        if busy > allocated {
                            vus.allocated.fetch_add(busy - allocated, Ordering::Relaxed);
                            allocated = busy;
                        }
                        let run = iteration(at, rng());
                        let mut abandoned = abandoned.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                () = run => {}
                                _ = abandoned.wait_for(|a| *a) => {}
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => recorder.dropped(&tags),
                }
            }
            // Let the iterations under way finish, within the graceful stop.
            if tokio::time::timeout(GRACEFUL_STOP, pool.acquire_many(*max_vus))
                .await
                .is_err()
            {
                let _ = abandon.send(true);
                // They stop at their next poll; wait for their permits.
                let _ = pool.acquire_many(*max_vus).await;
            }
        }
        Executor::ConstantVus {
            vus: count,
            duration,
        } => {
            vus.allocated
                .fetch_add(u64::from(*count), Ordering::Relaxed);
            let end = begin + *duration;
            let tasks: Vec<_> = (0..*count)
                .map(|_| {
                    let iteration = iteration.clone();
                    tokio::spawn(async move {
                        let mut rng = rng();
                        while Instant::now() < end {
                            let seed = SmallRng::from_rng(&mut rng);
                            iteration(Instant::now(), seed).await;
                        }
                    })
                })
                .collect();
            join_within(tasks, end + GRACEFUL_STOP).await;
        }
        Executor::RampingVus { start_vus, stages } => {
            let most = stages
                .iter()
                .map(|s| s.target.max(0.0) as u32)
                .chain([*start_vus])
                .max()
                .unwrap_or(1);
            vus.allocated.fetch_add(u64::from(most), Ordering::Relaxed);
            let target = Arc::new(AtomicU32::new(*start_vus));
            let done = Arc::new(AtomicU32::new(0));
            let tasks: Vec<_> = (0..most)
                .map(|index| {
                    let (iteration, target, done) =
                        (iteration.clone(), Arc::clone(&target), Arc::clone(&done));
                    tokio::spawn(async move {
                        let mut rng = rng();
                        while done.load(Ordering::Relaxed) == 0 {
                            if index < target.load(Ordering::Relaxed) {
                                let seed = SmallRng::from_rng(&mut rng);
                                iteration(Instant::now(), seed).await;
                            } else {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    })
                })
                .collect();
            while let Some(now) = ramping_vus(*start_vus, stages, begin.elapsed()) {
                target.store(now, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            done.store(1, Ordering::Relaxed);
            join_within(tasks, Instant::now() + GRACEFUL_STOP).await;
        }
        Executor::SharedIterations {
            vus: count,
            iterations,
            max_duration,
        } => {
            vus.allocated
                .fetch_add(u64::from(*count), Ordering::Relaxed);
            let left = Arc::new(AtomicU64::new(*iterations));
            let end = begin + *max_duration;
            let tasks: Vec<_> = (0..*count)
                .map(|_| {
                    let (iteration, left) = (iteration.clone(), Arc::clone(&left));
                    tokio::spawn(async move {
                        let mut rng = rng();
                        while Instant::now() < end
                            && left
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                                    l.checked_sub(1)
                                })
                                .is_ok()
                        {
                            let seed = SmallRng::from_rng(&mut rng);
                            iteration(Instant::now(), seed).await;
                        }
                    })
                })
                .collect();
            join_within(tasks, end + GRACEFUL_STOP).await;
        }
        Executor::PerVuIterations {
            vus: count,
            iterations,
            max_duration,
        } => {
            vus.allocated
                .fetch_add(u64::from(*count), Ordering::Relaxed);
            let end = begin + *max_duration;
            let iterations = *iterations;
            let tasks: Vec<_> = (0..*count)
                .map(|_| {
                    let iteration = iteration.clone();
                    tokio::spawn(async move {
                        let mut rng = rng();
                        for _ in 0..iterations {
                            if Instant::now() >= end {
                                break;
                            }
                            let seed = SmallRng::from_rng(&mut rng);
                            iteration(Instant::now(), seed).await;
                        }
                    })
                })
                .collect();
            join_within(tasks, end + GRACEFUL_STOP).await;
        }
    }
}

/// Waits for `tasks` until `deadline`, then abandons (aborts) what is left.
async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, deadline: Instant) {
    for task in tasks {
        let abort = task.abort_handle();
        let mut task = task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            abort.abort();
            // Stopped for sure before the run's figures are read.
            let _ = task.await;
        }
    }
}
