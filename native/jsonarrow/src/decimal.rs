//! Exact decimals up to 256 bits: a magnitude in four 64-bit limbs and a sign, written out as Arrow's
//! little-endian two's complement (16 bytes for decimal128, 32 for decimal256).

/// An unsigned 256-bit integer, least significant limb first.
#[derive(Clone, Copy, Default)]
pub struct Magnitude([u64; 4]);

impl Magnitude {
    /// `self * multiplier + addend`; false (and `self` undefined) when it overflows 256 bits.
    pub fn mul_add(&mut self, multiplier: u64, addend: u64) -> bool {
        let mut carry = u128::from(addend);
        for limb in &mut self.0 {
            let value = u128::from(*limb) * u128::from(multiplier) + carry;
            *limb = value as u64; // the low half; the high half carries
            carry = value >> 64;
        }
        carry == 0
    }

    /// `self * 10^exponent`; false when it overflows.
    pub fn scale_up(&mut self, exponent: u32) -> bool {
        (0..exponent).all(|_| self.mul_add(10, 0))
    }

    /// `10^exponent`, `None` when it does not fit 256 bits.
    pub fn pow10(exponent: u32) -> Option<Magnitude> {
        let mut power = Magnitude([1, 0, 0, 0]);
        power.scale_up(exponent).then_some(power)
    }

    pub fn less_than(&self, other: &Magnitude) -> bool {
        for (mine, theirs) in self.0.iter().rev().zip(other.0.iter().rev()) {
            if mine != theirs {
                return mine < theirs;
            }
        }
        false
    }

    /// The magnitude and sign of a big-endian two's-complement integer of at most 32 bytes.
    pub fn from_be_twos_complement(bytes: &[u8]) -> Option<(bool, Magnitude)> {
        if bytes.is_empty() || bytes.len() > 32 {
            return None;
        }
        let negative = bytes[0] & 0x80 != 0;
        let mut le = [if negative { 0xFF } else { 0 }; 32];
        for (index, byte) in bytes.iter().rev().enumerate() {
            le[index] = *byte;
        }
        if negative {
            negate(&mut le);
        }
        let mut limbs = [0u64; 4];
        for (index, limb) in limbs.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(le[index * 8..index * 8 + 8].try_into().ok()?);
        }
        Some((negative, Magnitude(limbs)))
    }

    /// Appends the signed value as `width` bytes of little-endian two's complement.
    pub fn write(&self, negative: bool, width: usize, out: &mut Vec<u8>) {
        let mut le = [0u8; 32];
        for (index, limb) in self.0.iter().enumerate() {
            le[index * 8..index * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        if negative {
            negate(&mut le);
        }
        out.extend_from_slice(&le[..width]);
    }
}

/// Two's-complement negation in place (invert, add one).
fn negate(le: &mut [u8; 32]) {
    let mut carry = 1u16;
    for byte in le.iter_mut() {
        let value = u16::from(!*byte) + carry;
        *byte = value as u8; // the low byte; the rest carries
        carry = value >> 8;
    }
}

/// Standard base64 with padding, strictly: anything else is rejected rather than guessed at.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (index, chunk) in text.chunks(4).enumerate() {
        let last = index + 1 == text.len() / 4;
        let padding = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut word = 0u32;
        for byte in &chunk[..4 - padding] {
            word = word << 6 | u32::from(sextet(*byte)?);
        }
        word <<= 6 * padding as u32;
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - padding]);
    }
    Some(out)
}

fn sextet(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}
