//! The resources of one kind a [`Selection`] picks, kept current: one shared informer for the
//! resources (in the own namespace, or in all namespaces with the selector sent to the server) and,
//! when the namespace selector has requirements, one for the namespaces it matches.
//!
//! Every change of either shows up on [`Selected::changes`]; [`Selected::objects`] is then the current
//! set, sorted by `namespace/name` (the operator's order).

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Namespace;
use kube_client::Client;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use crate::client::ApiSource;
use crate::informer::{Informer, Object, Registry};
use crate::resources::{Namespaces, Selection};
use crate::selector::Selector;

/// One kind of resource as a selection sees it.
pub struct Selected<K> {
    objects: Arc<Informer<K>>,
    /// Namespaces matching the namespace selector (`None`: own namespace, or every namespace).
    namespaces: Option<(Arc<Informer<Namespace>>, Selector)>,
    selector: Selector,
    own: Option<String>,
}

impl<K> std::fmt::Debug for Selected<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected").finish_non_exhaustive()
    }
}

impl<K: Object> Selected<K> {
    /// Starts (or joins) the informers for `sel`; `own` is the process' namespace.
    pub fn new(
        registry: &Registry,
        source: &ApiSource,
        client: &Client,
        sel: &Selection,
        own: &str,
    ) -> Selected<K> {
        let query = sel.selector.query();
        match &sel.namespaces {
            Namespaces::Own => Selected {
                objects: registry.informer::<K>(source, client, own, &query, ""),
                namespaces: None,
                selector: sel.selector.clone(),
                own: Some(own.to_owned()),
            },
            Namespaces::Matching(ns) => {
                let namespaces = (!ns.requirements().is_empty()).then(|| {
                    (
                        registry.informer::<Namespace>(source, client, "", &ns.query(), ""),
                        ns.clone(),
                    )
                });
                Selected {
                    objects: registry.informer::<K>(source, client, "", &query, ""),
                    namespaces,
                    selector: sel.selector.clone(),
                    own: None,
                }
            }
        }
    }

    /// Waits for the first lists; `false` when `stop` came first.
    pub async fn synced(&self, stop: &CancellationToken) -> bool {
        if !self.objects.synced(stop).await {
            return false;
        }
        match &self.namespaces {
            Some((n, _)) => n.synced(stop).await,
            None => true,
        }
    }

    /// A unit for every change (or missed changes) of the resources or the namespaces.
    pub fn changes(&self) -> BoxStream<'static, ()> {
        let objects = BroadcastStream::new(self.objects.subscribe()).map(|_| ());
        match &self.namespaces {
            Some((n, _)) => {
                futures::stream::select(objects, BroadcastStream::new(n.subscribe()).map(|_| ()))
                    .boxed()
            }
            None => objects.boxed(),
        }
    }

    /// The selected resources, sorted by `namespace/name`.
    pub fn objects(&self) -> Vec<Arc<K>> {
        let allowed_ns: Option<Vec<String>> = self.namespaces.as_ref().map(|(n, sel)| {
            n.all()
                .iter()
                .filter(|ns| sel.matches(ns.metadata.labels.as_ref()))
                .filter_map(|ns| ns.metadata.name.clone())
                .collect()
        });
        let mut out: Vec<(String, Arc<K>)> = self
            .objects
            .all()
            .into_iter()
            .filter(|o| {
                let meta = o.meta();
                let ns = meta.namespace.as_deref().unwrap_or("");
                self.selector.matches(meta.labels.as_ref())
                    && self.own.as_deref().is_none_or(|own| own == ns)
                    && allowed_ns
                        .as_ref()
                        .is_none_or(|a| a.iter().any(|n| n == ns))
            })
            .map(|o| (crate::informer::key(o.meta()), o))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, o)| o).collect()
    }
}
