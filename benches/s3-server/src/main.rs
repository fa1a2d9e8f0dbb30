//! The object-store benchmark's S3 server: s3s-fs's file-system store served as its own
//! binary does, except that every connection sets TCP_NODELAY. Without it, a response's
//! headers and body leave in two segments and the second waits for the client's delayed
//! ACK: about 40 ms on every other request, which would be the server measuring itself.
//!
//!     bench-s3-server <host> <port> <access key> <secret key> <root directory>

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, access_key, secret_key, root] = args.as_slice() else {
        return Err("usage: bench-s3-server <host> <port> <access key> <secret key> <root directory>".into());
    };
    let store = s3s_fs::FileSystem::new(root).map_err(|e| format!("{root}: {e:?}"))?;
    let mut service = S3ServiceBuilder::new(store);
    service.set_auth(SimpleAuth::from_single(access_key.as_str(), secret_key.as_str()));
    let service = service.build();
    let listener = TcpListener::bind((host.as_str(), port.parse::<u16>()?)).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let service = service.clone();
        tokio::spawn(async move {
            let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), service).await;
        });
    }
}
