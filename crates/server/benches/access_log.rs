//! What an access-log line costs the request that writes it: keygate's access log (formatted into
//! the thread's buffer, written by its own thread) against the same line through `tracing`'s fmt
//! subscriber writing each line to the output at once (how keygate logged requests before).
//! Both write to /dev/null, so the figure is the request thread's work, not the disk's.
//!
//!   cargo bench -p keygate-server --bench access_log

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_server::access_log::{AccessLog, Entry, Settings};
use keygate_server::config::LogFormat;

fn entry<'a>(request_id: &'a str) -> Entry<'a> {
    Entry {
        request_id,
        method: "GET",
        path: "/v1/videos/create",
        route: "/v1",
        status: 200,
        outcome: "upstream_2xx",
        client_id: b"0123456789abcdef01234567",
        latency_us: 187,
    }
}

fn bench(c: &mut Criterion) {
    let null = || std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let id = "9f86d081884c7d659a2feaa0c55ad015";
    let mut g = c.benchmark_group("access_log");
    for (name, format) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        let log = AccessLog::start(Settings { format, ..Settings::default() }, null()).unwrap();
        g.bench_function(format!("keygate_{name}"), |b| b.iter(|| log.record(&entry(id))));
        log.close();
    }
    // The same fields through tracing's fmt layer, a line written per event (its default).
    for (name, json) in [("text", false), ("json", true)] {
        let file = null();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || file.try_clone().unwrap())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"));
        let dispatch: tracing::Dispatch = if json { builder.json().finish().into() } else { builder.finish().into() };
        tracing::dispatcher::with_default(&dispatch, || {
            g.bench_function(format!("tracing_fmt_{name}"), |b| {
                b.iter(|| {
                    let e = entry(id);
                    tracing::info!(
                        target: "keygate::access",
                        request_id = e.request_id,
                        method = %e.method,
                        path = %e.path,
                        route = %e.route,
                        status = e.status,
                        outcome = %e.outcome,
                        client_id = std::str::from_utf8(e.client_id).unwrap(),
                        latency_us = e.latency_us,
                    );
                })
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
