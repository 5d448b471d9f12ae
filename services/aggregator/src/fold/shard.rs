//! Which dossiers a run, and each fold thread in it, owns.

/// Which dossiers this run keeps: all, or shard `index` of `count` by a hash of the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// FNV-1a of the dossier code: stable across runs, machines and versions.
    pub fn hash(dossier_code: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in dossier_code.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    pub fn owns(&self, dossier_code: &str) -> bool {
        self.count <= 1 || self.owns_hash(Self::hash(dossier_code))
    }

    fn owns_hash(&self, h: u64) -> bool {
        (h % u64::from(self.count)) as u32 == self.index
    }
}

/// Which part of a shard one fold thread owns: the shard's dossiers split again by the
/// same hash, so threads never share a dossier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub shard: Shard,
    pub index: u32,
    pub count: u32,
}

impl Part {
    pub fn whole(shard: Shard) -> Self {
        Part {
            shard,
            index: 0,
            count: 1,
        }
    }

    pub(super) fn owns(&self, dossier_code: &str) -> bool {
        if self.shard.count <= 1 && self.count <= 1 {
            return true;
        }
        let h = Shard::hash(dossier_code);
        self.shard.owns_hash(h)
            && ((h / u64::from(self.shard.count.max(1))) % u64::from(self.count)) as u32
                == self.index
    }
}
