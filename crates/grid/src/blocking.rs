//! Blocking I/O as an async stream, one step at a time.
//!
//! The daemon bounds tokio's blocking pool (a thread per blocking task
//! costs its stack and an allocator arena, and hundreds of them were most
//! of an initial sync's peak memory). A bounded pool deadlocks if blocking
//! tasks wait for each other: a thread reading a file that parks until a
//! writer thread takes its chunk holds a place that writer may need. So a
//! producer here never parks on a channel: each step runs as its own
//! blocking task, and the waiting for room happens on the async side.

use futures_util::Stream;

/// The items `next` produces from `state`, each call made on tokio's
/// blocking pool, up to `ahead` of them read ahead of the consumer. Ends
/// at the first `None`, or soon after the stream is dropped.
///
/// A step that panics ends the stream early: consumers check the length
/// they were promised, as they must anyway.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn stream<S, T, F>(state: S, ahead: usize, next: F) -> impl Stream<Item = T> + Send + Unpin
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnMut(&mut S) -> Option<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(ahead.max(1));
    tokio::spawn(async move {
        let mut held = (state, next);
        loop {
            // Room first: nothing is read that the consumer may never take.
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            let step = tokio::task::spawn_blocking(move || {
                let (mut state, mut next) = held;
                let item = next(&mut state);
                ((state, next), item)
            })
            .await;
            let Ok((back, Some(item))) = step else {
                return;
            };
            permit.send(item);
            held = back;
        }
    });
    let mut rx = rx;
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn yields_every_item_in_order_and_ends() {
        let items: Vec<u32> = stream(0u32, 2, |n| {
            *n += 1;
            (*n <= 5).then_some(*n)
        })
        .collect()
        .await;
        assert_eq!(items, [1, 2, 3, 4, 5]);
    }

    /// One blocking thread for the whole runtime: a producer that parked
    /// on its channel would hold it while the consumer's own blocking work
    /// waits for it.
    #[test]
    fn a_single_blocking_thread_is_enough_for_producer_and_consumer() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let total = runtime.block_on(async {
            let mut items = stream(0u64, 1, |n| {
                *n += 1;
                (*n <= 100).then_some(*n)
            });
            let mut total = 0;
            while let Some(n) = items.next().await {
                total += tokio::task::spawn_blocking(move || n).await.unwrap();
            }
            total
        });
        assert_eq!(total, 5050);
    }

    #[tokio::test]
    async fn stops_reading_once_the_consumer_is_gone() {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let reads = Arc::new(AtomicU32::new(0));
        let counted = reads.clone();
        let mut items = stream((), 1, move |_| Some(counted.fetch_add(1, Ordering::SeqCst)));
        assert_eq!(items.next().await, Some(0));
        drop(items);
        // The producer drops `next` (and its count) when it stops.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while Arc::strong_count(&reads) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the producer never stopped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The item taken, and at most one read into the room it left.
        assert!(reads.load(Ordering::SeqCst) <= 2);
    }
}
