//! Shards: one process runs several pipelines, each owning a fixed subset of the source
//! partitions, as if it were several replicas sharing one consumer.
//!
//! A lone pipeline's stages take turns: it waits while its workers decode a batch,
//! buffers the batch while they wait, then waits while they encode a flush. On two cores
//! it kept 1.5 of them busy, and two replicas on the same machine did a third more work
//! than one. Each shard decodes, buffers and encodes on its own thread, so on two cores
//! one buffers while the other decodes. A partition's records, and everything about it,
//! go to one shard, so each keeps the per-partition order the exactly-once protocol
//! relies on.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::{Input, Record};

/// The source's side of the shards' channels.
#[derive(Clone)]
pub struct Shards {
    txs: Vec<SyncSender<Input>>,
}

/// A shard has stopped (its run failed); the caller reports that shard's error.
#[derive(Debug)]
pub struct Stopped;

impl Shards {
    pub fn new(txs: Vec<SyncSender<Input>>) -> Self {
        assert!(!txs.is_empty(), "at least one shard");
        Shards { txs }
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// The shard that owns a partition. Stable for the life of the process, which is all
    /// it needs to be: storage, not the shard, holds a partition's progress.
    pub fn of(&self, topic: &str, partition: i32) -> usize {
        // FNV-1a: spreads topics without a per-process random seed.
        let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        (h.wrapping_add(partition as u64) % self.txs.len() as u64) as usize
    }

    /// Hand an input to the shards it concerns, in the order given: records and partition
    /// changes to their owners, a drain to all. A revocation goes through [`Self::revoke`].
    pub fn send(&self, input: Input) -> Result<(), Stopped> {
        if self.txs.len() == 1 {
            return self.txs[0].send(input).map_err(|_| Stopped);
        }
        match input {
            Input::Records(batch) => self.each(
                self.split(batch, |r: &Record| self.of(&r.topic, r.partition)),
                Input::Records,
            ),
            Input::Assigned(parts) => {
                self.each(self.split(parts, |p| self.of(&p.0, p.1)), Input::Assigned)
            }
            Input::Rewound(topic, partition, next) => self.txs[self.of(&topic, partition)]
                .send(Input::Rewound(topic, partition, next))
                .map_err(|_| Stopped),
            // Every shard, even past one that has stopped: a shard left without its drain
            // would wait for input forever.
            Input::Drain(deadline) => {
                let sent = self
                    .txs
                    .iter()
                    .filter(|tx| tx.send(Input::Drain(deadline)).is_ok())
                    .count();
                self.all(sent)
            }
            Input::Revoked(parts, ack) => self.all(self.revoked(parts, &ack)),
        }
    }

    /// Have every shard flush (or drop) its revoked partitions, and wait until all have
    /// answered, or `timeout` has passed. The shards still running answer even if one has
    /// stopped; the stopped one's partitions were never made durable past storage's
    /// record, so their next owner starts from there.
    pub fn revoke(&self, parts: Vec<(Arc<str>, i32)>, timeout: Duration) -> Result<(), Stopped> {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(self.txs.len());
        let sent = self.revoked(parts, &ack_tx);
        drop(ack_tx);
        let deadline = Instant::now() + timeout;
        for _ in 0..sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if ack_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        self.all(sent)
    }

    /// Send every shard its part of a revocation (possibly none: it answers at once), all
    /// answering on `ack`. Returns how many shards took it.
    fn revoked(&self, parts: Vec<(Arc<str>, i32)>, ack: &SyncSender<()>) -> usize {
        let split = self.split(parts, |p| self.of(&p.0, p.1));
        self.txs
            .iter()
            .zip(split)
            .filter(|(tx, parts)| tx.send(Input::Revoked(parts.clone(), ack.clone())).is_ok())
            .count()
    }

    /// Items grouped by the shard `owner` names, in their order.
    fn split<T>(&self, items: Vec<T>, owner: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
        let mut split: Vec<Vec<T>> = (0..self.txs.len()).map(|_| Vec::new()).collect();
        for item in items {
            split[owner(&item)].push(item);
        }
        split
    }

    /// `Ok` when every shard took its input.
    fn all(&self, sent: usize) -> Result<(), Stopped> {
        if sent == self.txs.len() {
            Ok(())
        } else {
            Err(Stopped)
        }
    }

    /// Send each shard its non-empty part.
    fn each<T>(&self, split: Vec<Vec<T>>, wrap: impl Fn(Vec<T>) -> Input) -> Result<(), Stopped> {
        for (tx, part) in self.txs.iter().zip(split) {
            if !part.is_empty() {
                tx.send(wrap(part)).map_err(|_| Stopped)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Body;
    use std::sync::mpsc::{sync_channel, Receiver};

    fn shards(n: usize) -> (Shards, Vec<Receiver<Input>>) {
        let (txs, rxs) = (0..n).map(|_| sync_channel(64)).unzip();
        (Shards::new(txs), rxs)
    }

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record {
            topic: Arc::from(topic),
            partition,
            offset,
            timestamp_ms: None,
            body: Body::Owned {
                key: None,
                payload: Vec::new(),
            },
        }
    }

    #[test]
    fn a_partition_always_goes_to_one_shard_in_order_with_its_assignment_and_rewinds() {
        let (s, rxs) = shards(3);
        let parts: Vec<(&str, i32)> = ["a", "b"]
            .into_iter()
            .flat_map(|t| (0..8).map(move |p| (t, p)))
            .collect();
        s.send(Input::Assigned(
            parts
                .iter()
                .map(|(t, p)| (Arc::from(*t), *p, Some(0)))
                .collect(),
        ))
        .unwrap();
        // Two batches, partitions interleaved, offsets rising within each partition.
        for round in 0..2 {
            let batch = (0..10)
                .flat_map(|o| {
                    parts
                        .iter()
                        .map(move |(t, p)| record(t, *p, round * 10 + o))
                })
                .collect();
            s.send(Input::Records(batch)).unwrap();
        }
        s.send(Input::Rewound(Arc::from("b"), 5, 7)).unwrap();
        s.send(Input::Drain(Instant::now())).unwrap();

        let mut owner = std::collections::HashMap::new();
        let mut used = std::collections::HashSet::new();
        for (i, rx) in rxs.iter().enumerate() {
            let mut next: std::collections::HashMap<(String, i32), i64> = Default::default();
            let mut drained = false;
            for input in rx.try_iter() {
                assert!(!drained, "nothing after the drain");
                match input {
                    Input::Assigned(ps) => {
                        for (t, p, _) in ps {
                            assert!(owner.insert((t.to_string(), p), i).is_none());
                            used.insert(i);
                        }
                    }
                    Input::Records(rs) => {
                        assert!(!rs.is_empty(), "no empty batches");
                        for r in rs {
                            let key = (r.topic.to_string(), r.partition);
                            assert_eq!(owner.get(&key), Some(&i), "{key:?} on its owner");
                            let n = next.entry(key).or_insert(0);
                            assert_eq!(r.offset, *n, "in order");
                            *n += 1;
                        }
                    }
                    Input::Rewound(t, p, 7) => {
                        assert_eq!(owner.get(&(t.to_string(), p)), Some(&i))
                    }
                    Input::Drain(_) => drained = true,
                    _ => panic!("unexpected input"),
                }
            }
            assert!(drained, "every shard is drained");
            assert!(next.values().all(|&n| n == 20), "every record arrived");
        }
        assert_eq!(owner.len(), 16, "every partition has one owner");
        assert_eq!(used.len(), 3, "16 partitions spread over all 3 shards");
    }

    #[test]
    fn a_revocation_reaches_every_shard_and_waits_for_all_of_them() {
        let (s, rxs) = shards(2);
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let answered = answered.clone();
                std::thread::spawn(move || {
                    let Ok(Input::Revoked(parts, ack)) = rx.recv() else {
                        panic!("a revocation")
                    };
                    // The second answers well after the first.
                    std::thread::sleep(Duration::from_millis(50 + 200 * i as u64));
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    ack.send(()).unwrap();
                    parts.len()
                })
            })
            .collect();
        let parts = (0..6).map(|p| (Arc::from("t"), p)).collect();
        s.revoke(parts, Duration::from_secs(60)).unwrap();
        assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 2);
        let counts: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            counts.iter().sum::<usize>(),
            6,
            "each partition revoked once"
        );
    }

    #[test]
    fn a_stopped_shard_is_reported_and_the_others_still_get_the_drain() {
        let (s, mut rxs) = shards(3);
        rxs.remove(1);
        assert!(s.send(Input::Drain(Instant::now())).is_err());
        for rx in &rxs {
            assert!(matches!(rx.try_recv(), Ok(Input::Drain(_))));
        }
        // A revocation is answered by the shards still running, without waiting for the
        // stopped one until the timeout.
        let answer: Vec<_> = rxs
            .into_iter()
            .map(|rx| {
                std::thread::spawn(move || {
                    if let Ok(Input::Revoked(_, ack)) = rx.recv() {
                        ack.send(()).unwrap();
                    }
                })
            })
            .collect();
        let started = Instant::now();
        assert!(s
            .revoke(vec![(Arc::from("t"), 0)], Duration::from_secs(600))
            .is_err());
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "did not wait for the stopped shard"
        );
        for a in answer {
            a.join().unwrap();
        }
    }
}
