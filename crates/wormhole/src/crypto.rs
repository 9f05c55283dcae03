//! The wormhole's cryptography, matching Python magic-wormhole's `_key.py`:
//! SPAKE2 (symmetric, Ed25519 group) turns the code into a shared key, and
//! every later message is a NaCl secretbox under a per-(side, phase) key.

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::WormholeError;

/// NaCl secretbox nonce length; the nonce travels in front of the box.
const NONCE_LEN: usize = 24;

/// Fills `buf` from the OS random source.
pub(crate) fn random_fill(buf: &mut [u8]) -> Result<(), WormholeError> {
    getrandom::getrandom(buf)
        .map_err(|e| WormholeError::Transport(format!("no randomness from the OS: {e}")))
}

/// `len` random bytes as lower-case hex (sides and message ids).
pub(crate) fn random_hex(len: usize) -> Result<String, WormholeError> {
    let mut buf = vec![0u8; len];
    random_fill(&mut buf)?;
    Ok(data_encoding::HEXLOWER.encode(&buf))
}

/// One side of the PAKE, before the peer's message arrived.
pub(crate) struct Pake(Spake2<Ed25519Group>);

impl Pake {
    /// Starts SPAKE2: password = the code's bytes, identity = the appid's
    /// bytes (as `SPAKE2_Symmetric(code, idSymmetric=appid)` in Python).
    /// Returns the state and our outbound message.
    pub(crate) fn start(code: &str, appid: &str) -> (Pake, Vec<u8>) {
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(code.as_bytes()),
            &Identity::new(appid.as_bytes()),
        );
        (Pake(state), msg)
    }

    /// Finishes with the peer's message; a malformed message is the peer's
    /// protocol error (a *wrong* code still "succeeds" here, with a
    /// different key, and only shows when decryption fails).
    pub(crate) fn finish(self, peer_msg: &[u8]) -> Result<SharedKey, WormholeError> {
        let key = self
            .0
            .finish(peer_msg)
            .map_err(|e| WormholeError::PeerProtocol(format!("bad PAKE message: {e:?}")))?;
        Ok(SharedKey(key))
    }
}

/// The key both sides agree on after SPAKE2 (if they used the same code).
pub(crate) struct SharedKey(Vec<u8>);

impl SharedKey {
    /// The secretbox key for messages that `side` sends in `phase`:
    /// HKDF-SHA256 (no salt) with info
    /// `b"wormhole:phase:" || sha256(side) || sha256(phase)`, 32 bytes
    /// (`derive_phase_key` in `_key.py`).
    fn phase_key(&self, side: &str, phase: &str) -> [u8; 32] {
        let mut info = Vec::with_capacity(15 + 64);
        info.extend_from_slice(b"wormhole:phase:");
        info.extend_from_slice(&Sha256::digest(side.as_bytes()));
        info.extend_from_slice(&Sha256::digest(phase.as_bytes()));
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(&info, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        okm
    }

    /// Encrypts a message that `side` (us) sends in `phase`:
    /// `nonce || secretbox(plaintext)`, with a random nonce.
    pub(crate) fn encrypt(
        &self,
        side: &str,
        phase: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, WormholeError> {
        let key = self.phase_key(side, phase);
        let cipher = XSalsa20Poly1305::new(Key::from_slice(&key));
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce)?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            // Only fails for absurdly long plaintexts.
            .map_err(|_| WormholeError::InvalidInput("message too long to encrypt".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what `side` (the peer) sent in `phase`. `None` if it does
    /// not authenticate: a different key (wrong code) or tampering.
    pub(crate) fn decrypt(&self, side: &str, phase: &str, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let key = self.phase_key(side, phase);
        XSalsa20Poly1305::new(Key::from_slice(&key))
            .decrypt(Nonce::from_slice(nonce), sealed)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pake_agrees_on_same_code_only() {
        let (a, ma) = Pake::start("4-purple-sausages", "appid");
        let (b, mb) = Pake::start("4-purple-sausages", "appid");
        let (c, mc) = Pake::start("4-purple-sausagez", "appid");
        let ka = a.finish(&mb).unwrap();
        let kb = b.finish(&ma).unwrap();
        assert_eq!(ka.0, kb.0);
        assert_eq!(ka.0.len(), 32);
        let (a2, ma2) = Pake::start("4-purple-sausages", "appid");
        let kc = c.finish(&ma2).unwrap();
        let ka2 = a2.finish(&mc).unwrap();
        assert_ne!(kc.0, ka2.0);
    }

    #[test]
    fn secretbox_round_trip_is_bound_to_side_and_phase() {
        let key = SharedKey(vec![7u8; 32]);
        let sealed = key.encrypt("aaaa", "version", b"hello").unwrap();
        assert_eq!(sealed.len(), 24 + 16 + 5);
        assert_eq!(key.decrypt("aaaa", "version", &sealed).unwrap(), b"hello");
        assert!(key.decrypt("bbbb", "version", &sealed).is_none());
        assert!(key.decrypt("aaaa", "0", &sealed).is_none());
        assert!(key.decrypt("aaaa", "version", &sealed[..10]).is_none());
        assert!(SharedKey(vec![8u8; 32])
            .decrypt("aaaa", "version", &sealed)
            .is_none());
    }

    /// A known answer from Python: `derive_phase_key(b"\x07"*32, "side",
    /// "phase")` with magic-wormhole 0.24.0.
    #[test]
    fn phase_key_matches_python() {
        let key = SharedKey(vec![7u8; 32]);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&key.phase_key("side", "phase")),
            PYTHON_PHASE_KEY
        );
    }
    const PYTHON_PHASE_KEY: &str =
        "a88295f5e95354b2226e5f922866717fc90a6c32e37649ed671fde2b5c70b27f";
}
