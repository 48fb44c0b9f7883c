//! The access log: off by default, one line per request when on, in the
//! configured format. Captured with a minimal tracing subscriber on a
//! single-threaded runtime (the subscriber is per thread).

mod common;

use std::sync::{Arc, Mutex};

use common::*;

#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<Vec<(String, String)>>>,
}

struct MessageVisitor<'a>(&'a mut String);

impl tracing::field::Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut msg = String::new();
        event.record(&mut MessageVisitor(&mut msg));
        self.lines.lock().unwrap().push((event.metadata().target().to_string(), msg));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    fn access_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter(|(t, _)| t == "rampart_lb::access").map(|(_, m)| m.clone()).collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn access_log_off_by_default_and_formatted_when_on() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let b = Backend::start("b1").await;
    let off = start_lb(&one_frontend("http", "round_robin", &[b.addr], "[frontend.health]\nenabled = false\n")).await;
    assert_eq!(get(off.local_addr("web").unwrap(), "/a").await.unwrap().0, 200);
    assert!(capture.access_lines().is_empty(), "access log must be off by default");

    let extra = "access_log = true\naccess_log_format = \"{method} {uri} -> {status} via {backend} in {attempts}\"\n\
                 [frontend.health]\nenabled = false\n";
    let on = start_lb(&one_frontend("http", "round_robin", &[b.addr], extra)).await;
    let addr = on.local_addr("web").unwrap();
    let mut c = Client::connect(addr).await.unwrap();
    assert_eq!(c.get("/x?y=1").await.unwrap().0, 200);
    assert_eq!(c.request("POST", "/echo", "hi").await.unwrap().0, 200);
    let lines = capture.access_lines();
    assert_eq!(
        lines,
        vec![format!("GET /x?y=1 -> 200 via {} in 1", b.addr), format!("POST /echo -> 200 via {} in 1", b.addr)]
    );
}
