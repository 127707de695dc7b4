//! Part-size arithmetic: S3's limits on parts and objects, and the part size a file gets.

use crate::config::MIB;

/// S3's limits: at most 10 000 parts, each 5 MiB to 5 GiB (the last may be smaller).
const MAX_PARTS: u64 = 10_000;
const MIN_PART: u64 = 5 * MIB;
const MAX_PART: u64 = 5 * 1024 * MIB;
/// The largest object S3 accepts.
pub const MAX_OBJECT: u64 = 5 * 1024 * 1024 * MIB;

/// The part size for a file: the configured one, grown (in whole MiB) as needed to stay
/// within 10 000 parts.
pub fn part_size_for(size: u64, preferred: u64) -> u64 {
    preferred
        .max(size.div_ceil(MAX_PARTS))
        .max(MIN_PART)
        .next_multiple_of(MIB)
        .min(MAX_PART)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_s3_limits() {
        let gib = 1024 * MIB;
        assert_eq!(part_size_for(100 * MIB, 16 * MIB), 16 * MIB);
        assert_eq!(part_size_for(100 * MIB, MIB), 5 * MIB);
        // 1 TiB at 16 MiB would be 65 536 parts: grow to stay within 10 000.
        let p = part_size_for(1024 * gib, 16 * MIB);
        assert!((1024 * gib).div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % MIB, 0);
        assert_eq!(
            part_size_for(MAX_OBJECT, 16 * MIB),
            MAX_PART.min(part_size_for(MAX_OBJECT, 16 * MIB))
        );
        assert!(MAX_OBJECT.div_ceil(part_size_for(MAX_OBJECT, 16 * MIB)) <= MAX_PARTS);
    }
}
