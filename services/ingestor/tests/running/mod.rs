//! An ingestor run in-process for the integration tests, stopped through its shutdown
//! future. Apart from `common`, which the cli crate's tests share and which must not
//! need this crate's test-only dependencies.
#![allow(dead_code)]

use std::sync::Arc;

use sohoa_ingestor::Metrics;

pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: std::thread::JoinHandle<Result<sohoa_ingestor::Totals, sohoa_ingestor::IngestError>>,
    _rt: Arc<tokio::runtime::Runtime>,
}

pub fn start(cfg: sohoa_runtime::Config, metrics: Arc<Metrics>) -> Running {
    // RUST_LOG=info shows the ingestor's log when a test needs explaining.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let h = rt.handle().clone();
    let handle = std::thread::spawn(move || {
        sohoa_ingestor::run(&cfg, &h, metrics, async move {
            let _ = rx.await;
        })
    });
    Running {
        stop,
        handle,
        _rt: rt,
    }
}

impl Running {
    pub fn stop(self) -> sohoa_ingestor::Totals {
        let _ = self.stop.send(());
        self.handle
            .join()
            .unwrap()
            .expect("ingestor drained cleanly")
    }
}
