//! The server's maximum connection age, proved the way the HPA needs it: a
//! client that connected to the only replica keeps calling, a second replica
//! is added, and the client's calls reach it once its connection ages out,
//! with no call cut by the server on the way. Without an age limit (the control) the
//! same client stays on the first replica for good.
//!
//! Between client and replicas sits a TCP front that plays a Service's load
//! balancer: each *new* connection goes to the replica that has been given
//! the fewest connections so far (so a reconnect lands on the newcomer);
//! an open connection is never moved, exactly as with kube-proxy or any L4
//! balancer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use taskcast_serving::grpc::{self, ConnectionAge, GrpcOptions};
use taskcast_serving::grpc_metrics::GrpcMetricsLayer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::service::Routes;
use tonic::transport::Endpoint;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// One replica: a real `grpc::serve` whose health service knows only its own
/// name, so `Check(name)` tells which replica answered.
struct Replica {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(name: &'static str, age: Option<ConnectionAge>) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (reporter, health) = grpc::health();
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
        let metrics = GrpcMetricsLayer::new(&Registry::new()).expect("metrics");
        let (stop, stopped) = oneshot::channel::<()>();
        let options = GrpcOptions {
            max_connection_age: age,
            ..GrpcOptions::default()
        };
        let server = grpc::serve(
            listener,
            options,
            metrics,
            health,
            Routes::default(),
            async move {
                let _ = stopped.await;
            },
        )
        .expect("server");
        let task = tokio::spawn(async move {
            // Keeps the reporter (and so the statuses) alive with the server.
            let _reporter = reporter;
            server.await.expect("serve");
        });
        Replica {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The balancer in front of the replicas: new connections to the replica
/// given the fewest so far; bytes copied both ways until either side closes.
struct Front {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<(SocketAddr, usize)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Front {
    async fn start(first: SocketAddr) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let backends = Arc::new(Mutex::new(vec![(first, 0usize)]));
        let pool = Arc::clone(&backends);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = {
                    let mut pool = pool.lock().expect("pool");
                    let Some(pick) = pool.iter_mut().min_by_key(|(_, n)| *n) else {
                        continue;
                    };
                    pick.1 += 1;
                    pick.0
                };
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Front {
            addr,
            backends,
            task,
        }
    }

    fn add(&self, backend: SocketAddr) {
        self.backends.lock().expect("pool").push((backend, 0));
    }

    fn connections(&self) -> Vec<usize> {
        self.backends
            .lock()
            .expect("pool")
            .iter()
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a long-lived client saw: calls answered by each replica, and calls
/// that failed for any other reason.
#[derive(Debug, Default)]
struct Seen {
    first: usize,
    added: usize,
    failed: Vec<String>,
}

/// Starts replica "a", connects one client through the front, adds replica
/// "b" once the client is on "a", and keeps calling for `calling`.
async fn long_lived_client(age: Option<ConnectionAge>, calling: Duration) -> (Seen, Vec<usize>) {
    let a = Replica::start("replica-a", age).await;
    let front = Front::start(a.addr).await;
    let channel = Endpoint::from_shared(format!("http://{}", front.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    // Asking for "replica-b": SERVING from b, NOT_FOUND from a.
    let ask = || HealthCheckRequest {
        service: "replica-b".into(),
    };
    let mut seen = Seen::default();
    match client.check(ask()).await {
        Err(s) if s.code() == Code::NotFound => seen.first += 1,
        other => panic!("the first call should reach replica a: {other:?}"),
    }
    let b = Replica::start("replica-b", age).await;
    front.add(b.addr);

    let deadline = tokio::time::Instant::now() + calling;
    while tokio::time::Instant::now() < deadline {
        match client.check(ask()).await {
            Ok(_) => seen.added += 1,
            Err(s) if s.code() == Code::NotFound => seen.first += 1,
            Err(s) => seen.failed.push(format!("{:?}: {}", s.code(), s.message())),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connections = front.connections();
    a.stop().await;
    b.stop().await;
    (seen, connections)
}

#[tokio::test]
async fn a_long_lived_client_reaches_a_replica_added_after_it_connected() {
    let age = ConnectionAge {
        max: Duration::from_millis(800),
        grace: Duration::from_secs(2),
    };
    let (seen, connections) = long_lived_client(Some(age), Duration::from_secs(3)).await;
    assert!(
        seen.added > 0,
        "no call reached the added replica: {seen:?}, connections per replica {connections:?}"
    );
    // It reconnected (through the front) rather than being served by a
    // connection it already had.
    assert!(connections[1] >= 1, "{connections:?}");
    // The GOAWAY is graceful: no call is cut by the server. A tonic client
    // may still lose the race of a call sent while the old connection
    // closes (hyper gives "transport error" before any response; it was
    // never answered, so a safe call can be retried: the example clients
    // do). At most one such call per reconnect, and nothing else.
    let reconnects: usize = connections.iter().sum::<usize>() - 1;
    assert!(
        seen.failed.len() <= reconnects
            && seen
                .failed
                .iter()
                .all(|f| f.starts_with("Unknown: transport error")),
        "failed calls: {seen:?}, connections per replica {connections:?}"
    );
}

#[tokio::test]
async fn without_an_age_limit_the_client_never_leaves_its_first_replica() {
    let (seen, connections) = long_lived_client(None, Duration::from_secs(2)).await;
    assert_eq!(seen.added, 0, "{seen:?}");
    assert!(seen.failed.is_empty(), "failed calls: {seen:?}");
    assert_eq!(connections, vec![1, 0]);
}
