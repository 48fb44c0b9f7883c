//! Peer frames over a real loopback connection: any bytes sent to a `rampart_transport::serve`
//! listener (here answered by multi-master's decode and validation) must end in answers or a
//! closed connection, never a panic or a hang. The input is sent, the write side closed, and
//! the answer read to the end.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rampart_mm::validate::{check_request, PeerLimits};
use rampart_mm::wire::{decode, encode, Envelope, PeerRequest, PeerResponse};
use rampart_paxos::{Acceptor, CounterCeiling};
use rampart_transport::{BoxFuture, Handler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Decodes, validates and answers like a multi-master peer server, with an acceptor in memory.
struct Answer;

impl Handler for Answer {
    fn handle(&self, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        Box::pin(async move {
            let env: Envelope = decode(&request)?;
            check_request(&env, &PeerLimits::new(&rampart_kv::Limits::default()))?;
            let PeerRequest::Paxos { requests } = env.request else { return Err("not Paxos".into()) };
            let mut acceptor = Acceptor::new();
            let ceiling = CounterCeiling::at_unix_ms(1_767_225_600_000);
            let replies = requests.into_iter().map(|r| acceptor.handle(r, ceiling).into_parts().1).collect();
            encode(&PeerResponse::Paxos { id: 1, replies })
        })
    }
}

struct Server {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        // Small frames, so the fuzzer reaches the limit.
        let cfg = rampart_transport::Config { frame_bytes_max: 64 * 1024, ..Default::default() };
        rt.spawn(rampart_transport::serve(listener, Arc::new(Answer), cfg));
        Server { rt, addr }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = server();
    s.rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.expect("connect to the peer listener");
        let _ = stream.write_all(data).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        // The server must close once the input ends (a frame cut short included).
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the peer listener did not close a connection whose input ended");
    });
});
