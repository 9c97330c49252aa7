//! A set of HTTP status codes (100–999) as a bitset: which statuses a breaker counts as
//! failures, which a retry policy retries.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    pub const fn empty() -> Self {
        Self([0; 16])
    }

    /// 500–599: what breakers and outlier detection count as failures by default.
    pub fn server_errors() -> Self {
        (500..600).collect()
    }

    pub fn insert(&mut self, status: u16) {
        if status < 1024 {
            self.0[usize::from(status / 64)] |= 1 << (status % 64);
        }
    }

    #[inline]
    pub fn contains(&self, status: u16) -> bool {
        status < 1024 && self.0[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }
}

impl FromIterator<u16> for StatusSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = Self::empty();
        for status in iter {
            set.insert(status);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_inserted() {
        let set: StatusSet = [502, 503, 504].into_iter().collect();
        assert!(set.contains(503) && !set.contains(500) && !set.contains(2000));
        let errors = StatusSet::server_errors();
        assert!(errors.contains(500) && errors.contains(599) && !errors.contains(499));
    }
}
