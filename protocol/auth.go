package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// The handshake's challenge-response (docs/format/wire.md):
//
//	dialer   -> Hello{nonce Nd}
//	acceptor -> Hello{nonce Na, MAC = HMAC(secret, "acceptor", Nd, Na, ids)}
//	dialer   -> Auth{MAC = HMAC(secret, "dialer", Na, Nd, ids)}
//
// ids are the cluster, volume, dialer and acceptor names and the chosen
// version, so a MAC cannot be replayed for another volume, node or
// direction. Each side proves knowledge of the secret over the other's
// fresh nonce; nothing is read from or written to a disk before both
// proofs have been checked.

// Version picks the highest version two ranges share; ok is false when
// they share none.
func Version(aMin, aMax, bMin, bMax uint16) (uint16, bool) {
	v := min(aMax, bMax)
	if v < max(aMin, bMin) {
		return 0, false
	}
	return v, true
}

// AuthMAC computes the MAC the side called role ("acceptor" or "dialer")
// sends: over the peer's nonce first, then its own.
func AuthMAC(secret []byte, role string, peerNonce, ownNonce [NonceSize]byte, cluster, volume, dialer, acceptor string, version uint16) [MACSize]byte {
	m := hmac.New(sha256.New, secret)
	field := func(b []byte) {
		var n [4]byte
		binary.LittleEndian.PutUint32(n[:], uint32(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	field([]byte("blkrep-auth-v1"))
	field([]byte(role))
	field(peerNonce[:])
	field(ownNonce[:])
	field([]byte(cluster))
	field([]byte(volume))
	field([]byte(dialer))
	field([]byte(acceptor))
	var v [2]byte
	binary.LittleEndian.PutUint16(v[:], version)
	field(v[:])
	var out [MACSize]byte
	copy(out[:], m.Sum(nil))
	return out
}

// CheckMAC compares MACs in constant time.
func CheckMAC(got []byte, want [MACSize]byte) bool { return hmac.Equal(got, want[:]) }
