//! Mutual TLS between nodes: every node presents a certificate signed by the cluster CA and
//! accepts only peers that do the same. A node calling a peer also checks the peer's name
//! `node-<id>.dermagate`, so a certificate issued to one node cannot answer as another. (The
//! serving side checks the caller the same way: a Raft message claiming to come from node N must
//! arrive over a connection whose client certificate carries `node-N.dermagate`.)

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::NodeId;

#[derive(Clone)]
pub struct PeerTls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// The name a node's certificate must carry (as a DNS SAN) to be accepted as that node.
pub fn peer_name(id: NodeId) -> String {
    format!("node-{id}.dermagate")
}

/// The node ids named (as `node-<id>.dermagate` DNS names) in a peer's certificate.
pub fn node_ids_in(cert_der: &[u8]) -> Vec<NodeId> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                dns.strip_prefix("node-")?.strip_suffix(".dermagate")?.parse().ok()
            }
            _ => None,
        })
        .collect()
}

impl PeerTls {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> std::io::Result<PeerTls> {
        Ok(PeerTls { ca_pem: std::fs::read(ca)?, cert_pem: std::fs::read(cert)?, key_pem: std::fs::read(key)? })
    }

    pub fn from_pem(ca_pem: Vec<u8>, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> PeerTls {
        PeerTls { ca_pem, cert_pem, key_pem }
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Server side: client certificates are mandatory and must chain to the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity()).client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    pub fn client_config(&self, target: NodeId) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(peer_name(target))
    }
}
