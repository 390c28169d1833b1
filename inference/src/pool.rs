//! A bounded pool of inference workers, never the async runtime: a fixed number of threads
//! (sized to the machine) take jobs from a bounded queue. When the queue is full a job is refused
//! at once (`Busy`), so the API can answer 503 with `Retry-After` immediately instead of timing
//! out later; a job whose deadline passed while queued is dropped unrun.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the inference queue is full")]
    Busy,
    #[error("the deadline passed before the job ran")]
    DeadlineExceeded,
    #[error("the inference workers stopped")]
    Stopped,
    #[error("the job panicked")]
    Panicked,
}

pub struct InferencePool {
    queue: SyncSender<(Instant, Job)>,
    depth: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
}

impl InferencePool {
    /// `workers` threads and room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> InferencePool {
        let (tx, rx) = sync_channel::<(Instant, Job)>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..workers.max(1) {
            let (rx, depth) = (rx.clone(), depth.clone());
            std::thread::Builder::new()
                .name(format!("inference-{n}"))
                .spawn(move || loop {
                    let next = rx.lock().map(|r| r.recv());
                    let Ok(Ok((deadline, job))) = next else { return };
                    let left = depth.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) - 1;
                    metrics::gauge!("dermagate_inference_queue_depth").set(left as f64);
                    if Instant::now() <= deadline {
                        job();
                    }
                })
                .expect("spawning an inference worker");
        }
        InferencePool { queue: tx, depth, capacity: queue }
    }

    /// Whether a job submitted now would find room in the queue (racy by nature: a hint).
    pub fn has_capacity(&self) -> bool {
        self.depth.load(std::sync::atomic::Ordering::Acquire) < self.capacity
    }

    /// Runs `work` on a worker before `deadline`, or refuses at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic in a decoder or the model must not cost the pool its worker: it is caught
            // here, reported to the caller, and the thread goes on to the next job.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            if outcome.is_err() {
                metrics::counter!("dermagate_inference_panics_total").increment(1);
                tracing::error!("an inference job panicked; the worker continues");
            }
            let _ = tx.send(outcome);
        });
        let depth = self.depth.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        match self.queue.try_send((deadline, job)) {
            Ok(()) => metrics::gauge!("dermagate_inference_queue_depth").set(depth as f64),
            Err(e) => {
                self.depth.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                return Err(match e {
                    TrySendError::Full(_) => {
                        metrics::counter!("dermagate_inference_shed_total").increment(1);
                        PoolError::Busy
                    }
                    TrySendError::Disconnected(_) => PoolError::Stopped,
                });
            }
        }
        // A job dropped unrun (deadline passed) drops its sender: that is the deadline error.
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(PoolError::Panicked),
            Err(_) => Err(PoolError::DeadlineExceeded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_overload_is_refused_at_once() {
        let pool = Arc::new(InferencePool::new(1, 1));
        let far = Instant::now() + Duration::from_secs(10);
        assert_eq!(pool.run(far, || 21 * 2).await, Ok(42));
        // Occupy the worker, fill the one queue slot, then the next job must be refused at once.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let busy = tokio::spawn(async move { p.run(far, move || wait.recv().ok()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = pool.clone();
        let queued = tokio::spawn(async move { p.run(far, || 1).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Refused without waiting: were it queued behind the blocked worker, this would hang.
        assert_eq!(pool.run(far, || 2).await, Err(PoolError::Busy));
        release.send(()).unwrap();
        assert!(busy.await.unwrap().is_ok());
        assert_eq!(queued.await.unwrap(), Ok(1));
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_cost_the_pool_its_worker() {
        let pool = InferencePool::new(1, 4);
        let far = Instant::now() + Duration::from_secs(10);
        let failed: Result<u32, PoolError> = pool.run(far, || panic!("crafted input")).await;
        assert_eq!(failed, Err(PoolError::Panicked));
        assert_eq!(pool.run(far, || 7).await, Ok(7), "the only worker still serves");
    }

    #[tokio::test]
    async fn a_job_past_its_deadline_is_not_run() {
        let pool = InferencePool::new(1, 4);
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(pool.run(past, || 1).await, Err(PoolError::DeadlineExceeded));
    }
}
