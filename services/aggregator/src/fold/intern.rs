//! Interned codes and the fold's hash maps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's hasher): keys here are dossier codes and small tuples from our own
/// files, not attacker-chosen, and SipHash's flood resistance costs a third of the fold.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A hash map keyed with [`FxHasher`].
pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// An interned string: agency, procedure and system codes repeat across many dossiers.
pub type Sym = u32;
pub const NO_SYM: Sym = u32::MAX;

#[derive(Debug, Default)]
pub struct Interner {
    ids: FxMap<Box<str>, Sym>,
    names: Vec<Box<str>>,
}

impl Interner {
    pub fn intern(&mut self, s: Option<&str>) -> Sym {
        let Some(s) = s else { return NO_SYM };
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as Sym;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    pub fn get(&self, id: Sym) -> Option<&str> {
        self.names.get(id as usize).map(|s| &**s)
    }

    /// Every interned string, by symbol: what the incremental state saves.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// An interner whose symbols are the positions of `names` (saved by [`Self::names`]),
    /// so facts saved with these symbols read back unchanged.
    pub fn from_names(names: Vec<Box<str>>) -> Self {
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as Sym))
            .collect();
        Interner { ids, names }
    }

    /// `current` if it already stands for `s` (a dossier's codes rarely change between its
    /// snapshots, and comparing is cheaper than hashing), else `s` interned.
    pub fn reintern(&mut self, current: Sym, s: Option<&str>) -> Sym {
        if current != NO_SYM && self.get(current) == s {
            return current;
        }
        self.intern(s)
    }
}
