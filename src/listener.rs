//! Accepting connections for both front ends: TCP, optionally TLS, with the caller's address kept
//! for the access policy. TLS handshakes run in their own tasks with a deadline, so a client that
//! stalls (or speaks plain text to a TLS port) never holds up the accept loop or a worker.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt;

use crate::monitoring::metrics;
use crate::shutdown;
use crate::tls::Tls;

/// One accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// tonic reads the caller's address from this (`Request::remote_addr`), TLS or not.
impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Self::Plain(s) => s.connect_info(),
            Self::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// A connection ready for HTTP: handshake done, with its peer address.
pub struct Accepted {
    pub io: Conn,
    pub peer: SocketAddr,
}

/// Accepts on `listener` until `stop`, handing out ready connections. With `tls`, each handshake
/// runs in its own task and must finish within `handshake_timeout`.
pub fn accept(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    handshake_timeout: Duration,
    protocol: &'static str,
    stop: shutdown::Signal,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let stopped = stop.wait();
        tokio::pin!(stopped);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut stopped => return,
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(protocol, error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Responses are small and latency matters more than packet count.
            let _ = tcp.set_nodelay(true);
            match &tls {
                // HTTP/2 has no header timeout of its own: a gRPC connection that sends nothing
                // would be held forever, so it must start talking within the handshake timeout.
                None if protocol == "grpc" => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut first = [0u8; 1];
                        match tokio::time::timeout(handshake_timeout, tcp.peek(&mut first)).await {
                            Ok(Ok(n)) if n > 0 => {
                                let _ = tx
                                    .send(Accepted {
                                        io: Conn::Plain(tcp),
                                        peer,
                                    })
                                    .await;
                            }
                            Ok(_) => {}
                            Err(_) => {
                                metrics::record_connection_error(protocol, "read_timeout");
                                tracing::debug!(protocol, %peer, "closed a connection that sent nothing");
                            }
                        }
                    });
                }
                None => {
                    if tx
                        .send(Accepted {
                            io: Conn::Plain(tcp),
                            peer,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx
                                    .send(Accepted {
                                        io: Conn::Tls(Box::new(stream)),
                                        peer,
                                    })
                                    .await;
                            }
                            Ok(Err(e)) => {
                                metrics::record_connection_error(protocol, "tls_handshake");
                                tracing::debug!(protocol, %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                metrics::record_connection_error(protocol, "handshake_timeout");
                                tracing::debug!(protocol, %peer, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    rx
}

/// Serves the REST router on accepted connections (HTTP/1.1) until `stop`, then waits for the
/// requests in flight. `read_timeout` bounds the wait for a request's headers, and so also how
/// long an idle keep-alive connection stays open.
pub async fn serve_http(
    mut incoming: mpsc::Receiver<Accepted>,
    app: Router,
    read_timeout: Duration,
    stop: shutdown::Signal,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(true);
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        let Accepted { io, peer } = tokio::select! {
            () = &mut stopped => break,
            next = incoming.recv() => match next {
                Some(conn) => conn,
                None => break,
            },
        };
        // The peer address travels with each request, as `axum::serve` would put it.
        let svc = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    metrics::record_connection_error("http", "read_timeout");
                    tracing::debug!(%peer, "closed a connection that sent no complete request headers in time");
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(incoming);
    graceful.shutdown().await;
}
