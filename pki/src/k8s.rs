//! Kubernetes Secret manifests for the certificates: the ingress' TLS secret, the CA secret nginx
//! verifies client certificates with (`nginx.ingress.kubernetes.io/auth-tls-secret`), and the client
//! certificate secrets (the gateway's; nginx's upstream one for `proxy-ssl-secret`).

use base64::Engine as _;

/// One Secret.
#[derive(Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub tls: bool,
    /// Data keys and their contents.
    pub data: Vec<(String, String)>,
}

/// Renders the Secrets as one multi-document YAML.
pub fn render(namespace: &str, secrets: &[Secret]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    for (i, s) in secrets.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str("apiVersion: v1\nkind: Secret\nmetadata:\n");
        out.push_str(&format!("  name: {}\n  namespace: {}\n", s.name, namespace));
        out.push_str("  labels:\n    app.kubernetes.io/part-of: meridian\n");
        out.push_str(if s.tls {
            "type: kubernetes.io/tls\n"
        } else {
            "type: Opaque\n"
        });
        out.push_str("data:\n");
        for (k, v) in &s.data {
            out.push_str(&format!("  {k}: {}\n", b64.encode(v.as_bytes())));
        }
    }
    out
}
