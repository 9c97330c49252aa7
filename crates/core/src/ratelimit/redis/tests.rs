//! Tests of `redis`.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use super::resp::encode;
use super::*;

fn limit(rate: u32, period_secs: u64, burst: u32) -> Limit {
    Limit {
        rate,
        period: Duration::from_secs(period_secs),
        burst,
    }
}

#[test]
fn urls() {
    let t = parse_url("redis://127.0.0.1:6390").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.db, t.password.as_deref()),
        ("127.0.0.1", 6390, 0, None)
    );
    let t = parse_url("redis://localhost").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("localhost", 6379));
    let t = parse_url("redis://:p%40ss@cache:7000/3").unwrap();
    assert_eq!(t.password.as_deref(), Some("p@ss"));
    assert_eq!(t.username, None);
    assert_eq!((t.host.as_str(), t.port, t.db), ("cache", 7000, 3));
    let t = parse_url("REDIS://alice:secret@[::1]:6380/").unwrap();
    assert_eq!(t.username.as_deref(), Some("alice"));
    assert_eq!(t.password.as_deref(), Some("secret"));
    assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 6380, 0));
    let t = parse_url("redis://[::1]").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 6379));
    assert!(!format!("{t:?}").contains("secret"));
    let redacted = parse_url("redis://:hunter2@h").unwrap();
    assert!(!format!("{redacted:?}").contains("hunter2"));
    for bad in [
        "rediss://h:1",
        "http://h",
        "h:6379",
        "redis://",
        "redis://h:99999",
        "redis://h:1/x",
        "redis://h/0?timeout=1",
        "redis://:%zz@h",
        "redis://[::1",
    ] {
        assert!(
            matches!(parse_url(bad), Err(RedisError::Url(_))),
            "{bad} parsed"
        );
    }
}

#[test]
fn encoding() {
    assert_eq!(
        encode(&[b"GET", b"k"]),
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
    );
}

#[test]
fn replies_are_checked_against_the_local_gcra() {
    let params = [Params::new(&limit(1, 60, 0), MICROS_PER_SEC)];
    let ok = decision_from_reply(
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(5), Reply::Int(0)])),
        &params,
    )
    .unwrap();
    assert!(ok.allowed);
    assert_eq!(ok.reset_secs, 60);
    // The script said "allowed" where the TAT says otherwise.
    let wrong = decision_from_reply(
        Reply::Array(Some(vec![
            Reply::Int(1),
            Reply::Int(5),
            Reply::Int(60_000_000),
        ])),
        &params,
    );
    assert!(matches!(wrong, Err(RedisError::Protocol(_))));
    let short = decision_from_reply(Reply::Array(Some(vec![Reply::Int(1)])), &params);
    assert!(matches!(short, Err(RedisError::Protocol(_))));
}

// ---- against a real redis-server ----------------------------------------

/// A redis-server of our own on a free loopback port, killed (by PID) on drop.
struct Server {
    child: Option<Child>,
    port: u16,
}

fn redis_server_missing() -> bool {
    let missing = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if missing {
        let _ = writeln!(
            io::stderr(),
            "note: redis-server not found, skipping a Redis rate-limit test"
        );
    }
    missing
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        for _ in 0..5 {
            let mut s = Server {
                child: None,
                port: free_port(),
            };
            if s.spawn(extra) {
                return s;
            }
        }
        panic!("could not start redis-server");
    }

    /// Starts redis-server on `self.port`; true once it answers PING.
    fn spawn(&mut self, extra: &[&str]) -> bool {
        let port = self.port.to_string();
        let dir = std::env::temp_dir();
        let mut args = vec![
            "--port",
            port.as_str(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap_or("/tmp"),
        ];
        args.extend_from_slice(extra);
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false; // exited: the port was taken
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, extra: &[&str]) {
        assert!(self.spawn(extra), "redis-server did not restart");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A raw command on a fresh connection.
    async fn raw(&self, args: &[&str]) -> Reply {
        self.raw_seq(&[args]).await.pop().expect("one reply")
    }

    /// Raw commands in order on one fresh connection.
    async fn raw_seq(&self, commands: &[&[&str]]) -> Vec<Reply> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let mut c = Conn {
            io: BufReader::new(stream),
            generation: 0,
        };
        let mut replies = Vec::new();
        for args in commands {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            replies.push(c.call(&args).await.expect("raw command"));
        }
        replies
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_exactly() {
    if redis_server_missing() {
        return;
    }
    let server = Server::start(&[]);
    let a = Arc::new(RedisStore::new(&server.url()).unwrap());
    let b = Arc::new(RedisStore::new(&server.url()).unwrap().with_pool_size(2));
    let limits = Arc::new(vec![limit(10, 3600, 9)]); // 10 at once, then 1 per 6 min
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let limits = limits.clone();
        tasks.push(tokio::spawn(
            async move { store.check("shared", &limits).await },
        ));
    }
    let mut allowed = 0;
    for t in tasks {
        let d = t.await.unwrap().expect("redis check");
        assert_eq!(d.limit, 10);
        if d.allowed {
            allowed += 1;
        } else {
            assert_eq!(d.remaining, 0);
            assert!((359..=360).contains(&d.retry_after_secs), "{d:?}");
        }
    }
    assert_eq!(allowed, 10);
    // Both replicas keep refusing, and other keys are untouched.
    assert!(!a.check("shared", &limits).await.unwrap().allowed);
    assert!(!b.check("shared", &limits).await.unwrap().allowed);
    assert!(b.check("other", &limits).await.unwrap().allowed);
}

#[tokio::test]
async fn numbers_ttl_and_two_limits() {
    if redis_server_missing() {
        return;
    }
    let server = Server::start(&[]);
    let store = RedisStore::new(&server.url()).unwrap();
    let burst = [limit(5, 3600, 4)]; // T = 720 s
    let remaining: Vec<u32> = futures_remaining(&store, "n", &burst, 5).await;
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    let refused = store.check("n", &burst).await.unwrap();
    assert!(!refused.allowed);
    assert!(
        (719..=720).contains(&refused.retry_after_secs),
        "{refused:?}"
    );
    assert!((3599..=3600).contains(&refused.reset_secs), "{refused:?}");
    // The key expires when it is fully replenished.
    match server.raw(&["PTTL", "velithon:rl:n"]).await {
        Reply::Int(ms) => assert!((3_599_000..=3_600_000).contains(&ms), "{ms}"),
        other => panic!("PTTL answered {other:?}"),
    }
    // Two limits, the hourly one binds; a refusal consumes nothing.
    let two = [limit(10, 60, 9), limit(2, 3600, 1)];
    assert_eq!(futures_remaining(&store, "t", &two, 2).await, vec![1, 0]);
    let d = store.check("t", &two).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.limit, 2);
    match server.raw(&["HGETALL", "velithon:rl:t"]).await {
        Reply::Array(Some(fields)) => assert_eq!(fields.len(), 4),
        other => panic!("HGETALL answered {other:?}"),
    }
    // Zero limits or a zero rate never reach Redis.
    assert!(store.check("z", &[]).await.unwrap().allowed);
    assert!(!store.check("z", &[limit(0, 1, 0)]).await.unwrap().allowed);
}

async fn futures_remaining(store: &RedisStore, key: &str, limits: &[Limit], n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = store.check(key, limits).await.unwrap();
        assert!(d.allowed, "{d:?}");
        out.push(d.remaining);
    }
    out
}

#[tokio::test]
async fn noscript_falls_back_to_eval() {
    if redis_server_missing() {
        return;
    }
    let server = Server::start(&[]);
    let store = RedisStore::new(&server.url()).unwrap();
    let l = [limit(3, 3600, 2)];
    assert!(store.check("k", &l).await.unwrap().allowed);
    assert_eq!(
        server.raw(&["SCRIPT", "FLUSH"]).await,
        Reply::Status("OK".into())
    );
    let d = store.check("k", &l).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    // EVAL cached the script again.
    let sha = store.sha.get().unwrap().clone();
    assert_eq!(
        server.raw(&["SCRIPT", "EXISTS", &sha]).await,
        Reply::Array(Some(vec![Reply::Int(1)]))
    );
}

#[tokio::test]
async fn password_and_database() {
    if redis_server_missing() {
        return;
    }
    let server = Server::start(&["--requirepass", "s3cr@t"]);
    let url = format!("redis://:s3cr%40t@127.0.0.1:{}/3", server.port);
    let store = RedisStore::new(&url).unwrap();
    store.warm_up().await.unwrap();
    assert!(store.check("k", &[limit(1, 60, 0)]).await.unwrap().allowed);
    assert!(!store.check("k", &[limit(1, 60, 0)]).await.unwrap().allowed);
    let replies = server
        .raw_seq(&[
            &["AUTH", "s3cr@t"],
            &["EXISTS", "velithon:rl:k"],
            &["SELECT", "3"],
            &["EXISTS", "velithon:rl:k"],
        ])
        .await;
    assert_eq!(replies[1], Reply::Int(0), "written to db 0");
    assert_eq!(replies[3], Reply::Int(1), "not written to db 3");
    let wrong = RedisStore::new(&format!("redis://:nope@127.0.0.1:{}", server.port)).unwrap();
    assert!(matches!(
        wrong.check("k", &[limit(1, 60, 0)]).await,
        Err(RedisError::Server(_))
    ));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    let started = Instant::now();
    let err = store.check("k", &[limit(1, 60, 0)]).await.unwrap_err();
    assert!(matches!(err, RedisError::Timeout), "{err}");
    assert!(started.elapsed() < Duration::from_millis(600));
    // Within the backoff: failing at once.
    let started = Instant::now();
    let err = store.check("k", &[limit(1, 60, 0)]).await.unwrap_err();
    assert!(matches!(err, RedisError::Unavailable), "{err}");
    assert!(started.elapsed() < Duration::from_millis(150));
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_redis_dying_and_coming_back() {
    if redis_server_missing() {
        return;
    }
    let mut server = Server::start(&[]);
    let timeout = Duration::from_millis(250);
    let store = RedisStore::new(&server.url())
        .unwrap()
        .with_timeout(timeout)
        .with_reconnect_backoff(Duration::from_millis(100));
    let l = [limit(2, 3600, 1)];
    assert!(store.check("k", &l).await.unwrap().allowed);

    server.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let result = store.check("k", &l).await;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() <= timeout + Duration::from_millis(100));
    }

    server.restart(&[]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let decision = loop {
        match store.check("k", &l).await {
            Ok(d) => break d,
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // A new, empty Redis (and a script it had never seen): a fresh key.
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 1);
    assert!(store.check("k", &l).await.unwrap().allowed);
    assert!(!store.check("k", &l).await.unwrap().allowed);
}
