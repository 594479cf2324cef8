//! A scripted broker for unit tests: it answers ApiVersions itself and hands every other
//! request to the test's script, which answers (or not) as the case needs.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

/// A request as the broker read it: its API key, version and correlation id.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub key: i16,
    pub version: i16,
    pub corr: i32,
}

/// Reads one request frame's header (key, version, correlation id: every request header
/// starts with them).
pub fn read_request(s: &mut TcpStream) -> io::Result<Asked> {
    let frame = read_frame(s)?;
    Ok(Asked {
        key: i16::from_be_bytes([frame[0], frame[1]]),
        version: i16::from_be_bytes([frame[2], frame[3]]),
        corr: i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes")),
    })
}

/// Reads one request frame whole (without its length prefix).
pub fn read_frame(s: &mut TcpStream) -> io::Result<Bytes> {
    let mut len = [0; 4];
    s.read_exact(&mut len)?;
    let mut frame = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

/// Writes `resp` as the answer to `asked`.
pub fn respond<M: Encodable + HeaderVersion>(s: &mut TcpStream, asked: Asked, resp: &M) -> io::Result<()> {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(asked.corr);
    header
        .encode(&mut buf, M::header_version(asked.version))
        .map_err(io::Error::other)?;
    resp.encode(&mut buf, asked.version).map_err(io::Error::other)?;
    s.write_all(&(buf.len() as u32).to_be_bytes())?;
    s.write_all(&buf)
}

/// Starts a broker on a free port that serves one connection: it answers ApiVersions
/// (every key in `keys`, versions 0 to `max`) and passes each other request to `script`
/// until the client is gone or `script` returns an error. Returns its address.
pub fn broker(
    keys: &[ApiKey],
    max: i16,
    mut script: impl FnMut(&mut TcpStream, Asked) -> io::Result<()> + Send + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound").to_string();
    let versions: Vec<ApiVersion> = [ApiKey::ApiVersions]
        .iter()
        .chain(keys)
        .map(|&k| ApiVersion::default().with_api_key(k as i16).with_max_version(max))
        .collect();
    std::thread::spawn(move || -> io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let versions = ApiVersionsResponse::default().with_api_keys(versions);
        loop {
            let asked = read_request(&mut s)?;
            if asked.key == ApiKey::ApiVersions as i16 {
                respond(&mut s, asked, &versions)?;
            } else {
                script(&mut s, asked)?;
            }
        }
    });
    addr
}
