//! Resource vectors: what one replica requests and what a pool has left.

use serde::Serialize;

/// What one replica requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub gpus: u32,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

/// What a pool has left. `None` in a dimension means the pool sets no bound there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Headroom {
    pub gpus: u32,
    pub cpu_milli: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub replicas: Option<u32>,
}

impl Headroom {
    /// How many replicas of `per_replica` fit, and if none, which dimension is short.
    pub fn fits(&self, per_replica: &Resources) -> (u32, Option<&'static str>) {
        let mut count = u32::MAX;
        let mut short = None;
        let mut take = |n: u64, dimension: &'static str| {
            let n = n.min(u32::MAX as u64) as u32;
            if n < count {
                count = n;
                if n == 0 {
                    short = Some(dimension);
                }
            }
        };
        if let Some(n) = self.gpus.checked_div(per_replica.gpus) {
            take(u64::from(n), "gpu");
        }
        if let (Some(free), true) = (self.cpu_milli, per_replica.cpu_milli > 0) {
            take(free / per_replica.cpu_milli, "cpu");
        }
        if let (Some(free), true) = (self.memory_bytes, per_replica.memory_bytes > 0) {
            take(free / per_replica.memory_bytes, "memory");
        }
        if let Some(free) = self.replicas {
            take(u64::from(free), "maxReplicas");
        }
        (count, short)
    }

    /// Takes `n` replicas of `per_replica`; the caller checked that they fit.
    pub fn take(&mut self, per_replica: &Resources, n: u32) {
        self.gpus -= per_replica.gpus * n;
        if let Some(cpu) = self.cpu_milli.as_mut() {
            *cpu -= per_replica.cpu_milli * u64::from(n);
        }
        if let Some(memory) = self.memory_bytes.as_mut() {
            *memory -= per_replica.memory_bytes * u64::from(n);
        }
        if let Some(replicas) = self.replicas.as_mut() {
            *replicas -= n;
        }
    }

    /// Gives back `n` replicas of `per_replica`.
    pub fn give_back(&mut self, per_replica: &Resources, n: u32) {
        self.gpus += per_replica.gpus * n;
        if let Some(cpu) = self.cpu_milli.as_mut() {
            *cpu += per_replica.cpu_milli * u64::from(n);
        }
        if let Some(memory) = self.memory_bytes.as_mut() {
            *memory += per_replica.memory_bytes * u64::from(n);
        }
        if let Some(replicas) = self.replicas.as_mut() {
            *replicas += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_is_the_tightest_dimension() {
        let room = Headroom {
            gpus: 8,
            cpu_milli: Some(10_000),
            memory_bytes: None,
            replicas: Some(100),
        };
        let replica = Resources {
            gpus: 2,
            cpu_milli: 4_000,
            memory_bytes: 1 << 30,
        };
        assert_eq!(room.fits(&replica), (2, None));
        let cpu_only = Resources {
            gpus: 0,
            cpu_milli: 20_000,
            memory_bytes: 0,
        };
        assert_eq!(room.fits(&cpu_only), (0, Some("cpu")));
    }

    #[test]
    fn take_and_give_back_round_trip() {
        let start = Headroom {
            gpus: 8,
            cpu_milli: Some(10_000),
            memory_bytes: Some(1 << 34),
            replicas: Some(5),
        };
        let replica = Resources {
            gpus: 1,
            cpu_milli: 1_000,
            memory_bytes: 1 << 30,
        };
        let mut room = start;
        room.take(&replica, 3);
        assert_eq!(room.gpus, 5);
        assert_eq!(room.replicas, Some(2));
        room.give_back(&replica, 3);
        assert_eq!(room, start);
    }
}
