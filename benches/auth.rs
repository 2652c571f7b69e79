//! What the access policy costs per request: the decision the REST guard and the gRPC layer make
//! from headers alone (open server, a checked infer token, a wrong token, the loopback default for
//! admin). Compare with the ~40-50 µs of server CPU a small-model request costs end to end
//! (`loadtest/security_bench.sh`). `cargo bench --bench auth`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::auth::{Auth, Scope, TokenFile};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("token file");
        TokenFile::load(&path).expect("tokens")
    };
    let secured = Auth::new(
        Some(write("admin", "admin-token-0123456789abcdef0123456789\n")),
        Some(write(
            "infer",
            "app-one-0123456789abcdef0123456789\napp-two-0123456789abcdef0123456789\n",
        )),
    );
    let open = Auth::default();
    let peer = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    let good = b"Bearer app-two-0123456789abcdef0123456789".as_slice();
    let bad = b"Bearer app-two-0123456789abcdef012345678X".as_slice();
    let mut g = c.benchmark_group("auth_check");
    g.bench_function("open_infer", |b| {
        b.iter(|| open.check(Scope::Infer, black_box(peer), black_box(None)))
    });
    g.bench_function("infer_token_accepted", |b| {
        b.iter(|| secured.check(Scope::Infer, black_box(peer), black_box(Some(good))))
    });
    g.bench_function("infer_token_refused", |b| {
        b.iter(|| secured.check(Scope::Infer, black_box(peer), black_box(Some(bad))))
    });
    g.bench_function("admin_loopback_default", |b| {
        b.iter(|| open.check(Scope::Admin, black_box(peer), black_box(None)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
