//! A catalog and its object store are bound to each other, as JuiceFS's `format` writes one volume
//! id to both: the catalog's identity (`catalog_meta.catalog_id`) is written into a marker object
//! of the store ([`MARKER_KEY`]). Every command that writes or deletes objects checks that the
//! marker names its catalog, so a typo in `--catalog` or `--store`, or two catalogs pointed at one
//! bucket prefix, can never make one catalog delete (as orphans) or overwrite another's objects.
//!
//! Order of writes: the identity goes into the catalog first (one row, first writer wins), then
//! the marker is created in the store (never overwritten: the first one wins there too), then the
//! catalog records that the marker names it. A crash between two steps is finished by the next
//! command; concurrent binders agree on one identity.
//!
//! Catalogs and stores made by earlier versions have neither: the first command that writes binds
//! them (*adopts* the store) when the store holds objects of that catalog. Objects that were in an
//! adopted store before the binding cannot be proven to belong to this catalog, so gc never
//! deletes them as orphans ([`Binding::owns`]).

use crate::catalog::{BindingState, DynCatalog};
use crate::error::{Error, Result};
use crate::store::{DynStore, ObjectMeta, StoreError};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::HashSet;

/// The store's marker object: which catalog the store belongs to.
pub const MARKER_KEY: &str = "quackfs-store.json";

/// What the marker holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Marker {
    format: u32,
    catalog_id: String,
    /// The catalog as described when it was bound (password masked), for messages.
    catalog: String,
    bound_at: String,
    /// The store held objects when it was bound (a store made by an earlier version).
    adopted: bool,
}

/// A verified binding of the engine's catalog to its store.
#[derive(Debug, Clone)]
pub struct Binding {
    pub catalog_id: String,
    /// For an adopted store: objects not newer than the marker may predate the binding.
    pub fence: Option<DateTime<Utc>>,
}

impl Binding {
    /// Whether an object no catalog row names can be proven to be this catalog's own (an upload
    /// whose catalog transaction never happened) rather than something that was in an adopted
    /// store before the binding.
    pub fn owns(&self, meta: &ObjectMeta) -> bool {
        self.fence.is_none_or(|fence| meta.modified > fence)
    }
}

/// Why binding is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `init`: a blank catalog may be given an identity and bound to an empty store.
    Create,
    /// Any other command that writes or deletes objects: the catalog must exist.
    Write,
}

async fn read_marker(store: &DynStore) -> Result<Option<(Marker, DateTime<Utc>)>> {
    let bytes = match store.get(MARKER_KEY).await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
        Error::StoreMismatch(format!(
            "store {}: its marker {MARKER_KEY} is not readable ({e}); it was not written by quackfs",
            store.describe()
        ))
    })?;
    let modified = store.head(MARKER_KEY).await?.modified;
    Ok(Some((marker, modified)))
}

fn binding_of(marker: &Marker, modified: DateTime<Utc>) -> Binding {
    Binding {
        catalog_id: marker.catalog_id.clone(),
        fence: marker.adopted.then_some(modified),
    }
}

fn other_catalog(store: &DynStore, m: &Marker) -> String {
    format!(
        "store {} belongs to another catalog ({}, bound at {}); this catalog is not bound to it, so nothing was changed",
        store.describe(),
        m.catalog,
        m.bound_at
    )
}

/// The error of a non-`init` command on a catalog that was never initialized.
pub fn not_initialized(catalog: &DynCatalog) -> Error {
    crate::catalog::CatalogError::Missing {
        url: catalog.describe(),
        why: "it was never initialized (no database, no store binding)".into(),
    }
    .into()
}

/// Checks (and if needed, makes) the binding of `catalog` to `store`; see the module
/// documentation. Errors are [`Error::StoreMismatch`] and change nothing.
pub async fn bind(catalog: &DynCatalog, store: &DynStore, purpose: Purpose) -> Result<Binding> {
    let st = catalog.binding().await?;
    if st.is_blank() && purpose != Purpose::Create {
        return Err(not_initialized(catalog));
    }
    let marker = read_marker(store).await?;
    match (&st.catalog_id, &marker) {
        (Some(id), Some((m, modified))) if *id == m.catalog_id => {
            if !st.bound {
                catalog.confirm_bound().await?;
            }
            Ok(binding_of(m, *modified))
        }
        (_, Some((m, _))) => Err(Error::StoreMismatch(other_catalog(store, m))),
        (Some(_), None) if st.bound => Err(Error::StoreMismatch(format!(
            "store {} is not the store of catalog {}: it has no quackfs marker, and the catalog was bound to {}",
            store.describe(),
            catalog.describe(),
            st.store.as_deref().unwrap_or("another store")
        ))),
        (_, None) => first_bind(catalog, store, &st).await,
    }
}

/// Checks right before gc deletes anything that the store's marker still names this catalog.
pub async fn recheck(store: &DynStore, b: &Binding) -> Result<()> {
    match read_marker(store).await? {
        Some((m, _)) if m.catalog_id == b.catalog_id => Ok(()),
        Some((m, _)) => Err(Error::StoreMismatch(other_catalog(store, &m))),
        None => Err(Error::StoreMismatch(format!(
            "store {}: its marker {MARKER_KEY} disappeared; nothing is deleted from a store that cannot be proven to be this catalog's",
            store.describe()
        ))),
    }
}

/// Checks, before a blank catalog is created at all, that `store` could be bound to it (so a
/// refused `init` leaves no catalog file behind).
pub async fn check_store_for_new_catalog(store: &DynStore) -> Result<()> {
    if let Some((m, _)) = read_marker(store).await? {
        return Err(Error::StoreMismatch(other_catalog(store, &m)));
    }
    if !store.list(crate::catalog::LAYERS_PREFIX).await?.is_empty() {
        return Err(foreign_objects(store));
    }
    Ok(())
}

fn foreign_objects(store: &DynStore) -> Error {
    Error::StoreMismatch(format!(
        "store {} already holds quackfs objects of another catalog (or of an earlier version whose catalog is elsewhere); a new catalog needs a store of its own (another directory or S3 prefix)",
        store.describe()
    ))
}

/// Binds a catalog without a marker in its store: a new catalog on an empty store, a catalog of
/// an earlier version adopting its store, or finishing a binding a crash interrupted.
async fn first_bind(catalog: &DynCatalog, store: &DynStore, st: &BindingState) -> Result<Binding> {
    let objects = store.list(crate::catalog::LAYERS_PREFIX).await?;
    if !objects.is_empty() {
        if !st.has_layers {
            return Err(foreign_objects(store));
        }
        // Adopting: the store must hold this catalog's objects, not another's.
        let present: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let snap = catalog.gc_snapshot().await?;
        let ours = snap
            .layers
            .iter()
            .filter(|l| l.doomed_at.is_none())
            .filter(|l| present.contains(l.row.object_key.as_str()))
            .count();
        if ours == 0 {
            return Err(Error::StoreMismatch(format!(
                "store {} holds none of the objects catalog {} refers to: wrong --store or --catalog?",
                store.describe(),
                catalog.describe()
            )));
        }
    } else if st.has_layers {
        return Err(Error::StoreMismatch(format!(
            "store {} is empty, but catalog {} refers to layer objects: wrong --store?",
            store.describe(),
            catalog.describe()
        )));
    }
    let id = catalog
        .claim_id(&super::new_id(), &store.describe())
        .await?;
    let marker = Marker {
        format: 1,
        catalog_id: id.clone(),
        catalog: catalog.describe(),
        bound_at: super::fmt_time(super::now_millis()),
        adopted: !objects.is_empty(),
    };
    let json = serde_json::to_vec_pretty(&marker)
        .map_err(|e| Error::Invalid(format!("cannot encode the store marker: {e}")))?;
    match store.put(MARKER_KEY, Bytes::from(json)).await {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Whoever created the marker, it must name this catalog now.
    match read_marker(store).await? {
        Some((m, modified)) if m.catalog_id == id => {
            catalog.confirm_bound().await?;
            if m.adopted {
                tracing::warn!(
                    "bound catalog {} to store {}, which already held its objects (made by an earlier version)",
                    catalog.describe(),
                    store.describe()
                );
            }
            Ok(binding_of(&m, modified))
        }
        Some((m, _)) => Err(Error::StoreMismatch(other_catalog(store, &m))),
        None => Err(Error::StoreMismatch(format!(
            "store {}: the marker {MARKER_KEY} just written cannot be read back",
            store.describe()
        ))),
    }
}
