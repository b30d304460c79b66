package interop

import (
	"bytes"
	"sync"
	"testing"
)

// TestMultiConn: with NBD_FLAG_CAN_MULTI_CONN, a FLUSH on one connection
// covers writes acknowledged on another, and data written through one
// connection is visible through every other once acknowledged.
func TestMultiConn(t *testing.T) {
	d := startDaemon(t, daemonOpts{tcp: true})
	a := d.connect(t, sessionOpts{structured: true, blockSize: true})
	b := d.connect(t, sessionOpts{structured: true, blockSize: true, tcp: true})
	for name, s := range map[string]*session{"A (unix)": a, "B (tcp)": b} {
		if s.info.flags&tflagMultiConn == 0 {
			t.Fatalf("connection %s: transmission flags %#x lack CAN_MULTI_CONN", name, s.info.flags)
		}
	}
	d.waitClients(t, 2)

	const blocks, bs = 64, 64 << 10
	// Writes pipelined on A, all acknowledged before B flushes.
	dataA := randBytes(t, blocks*bs)
	for i := 0; i < blocks; i++ {
		a.submit(cmdWrite, 0, uint64(i*bs), bs, dataA[i*bs:(i+1)*bs])
	}
	for i := 0; i < blocks; i++ {
		if r := a.next(); r.errno != 0 {
			t.Fatalf("write on A: errno %d", r.errno)
		}
	}
	before := d.stats(t)
	if e := b.flush(); e != 0 {
		t.Fatalf("flush on B: errno %d", e)
	}
	if st := d.stats(t); st.Flushes != before.Flushes+1 {
		t.Errorf("flush counter %d -> %d, want +1", before.Flushes, st.Flushes)
	}
	for i := 0; i < blocks; i++ {
		got := b.mustRead(uint64(i*bs), bs)
		if !bytes.Equal(got, dataA[i*bs:(i+1)*bs]) {
			t.Fatalf("block %d written on A reads differently on B", i)
		}
	}
	if got := d.readDisk(t, 0, blocks*bs); !bytes.Equal(got, dataA) {
		t.Fatalf("after the flush on B the disk file lacks A's writes (first difference at %d)", firstDiff(got, dataA))
	}

	// Both connections writing at once, disjoint interleaved blocks,
	// each pipelined; then each flushes and reads what the other wrote.
	const base = 32 << 20
	dataB := randBytes(t, blocks*bs)
	dataA = randBytes(t, blocks*bs)
	var bufs [2][]byte
	for i := 0; i < 2*blocks; i++ {
		off := uint64(base + i*bs)
		if i%2 == 0 {
			bufs[0] = a.encode(bufs[0], cmdWrite, 0, off, bs, dataA[(i/2)*bs:(i/2+1)*bs])
		} else {
			bufs[1] = b.encode(bufs[1], cmdWrite, 0, off, bs, dataB[(i/2)*bs:(i/2+1)*bs])
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*session{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.send(bufs[i]) // no t.Fatal off the test goroutine
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("connection %d: sending pipelined writes: %v", i, err)
		}
	}
	for _, s := range []*session{a, b} {
		for i := 0; i < blocks; i++ {
			if r := s.next(); r.errno != 0 {
				t.Fatalf("concurrent write: errno %d", r.errno)
			}
		}
	}
	if e := a.flush(); e != 0 {
		t.Fatalf("flush on A: errno %d", e)
	}
	for i := 0; i < 2*blocks; i++ {
		off := uint64(base + i*bs)
		want, reader := dataA[(i/2)*bs:(i/2+1)*bs], b
		if i%2 == 1 {
			want, reader = dataB[(i/2)*bs:(i/2+1)*bs], a
		}
		if got := reader.mustRead(off, bs); !bytes.Equal(got, want) {
			t.Fatalf("block at %d reads differently on the other connection", off)
		}
	}
	a.disconnect()
	b.disconnect()
	d.waitClients(t, 0)
}

// TestManyClients: 200 clients connected at once, each writing its own
// block; every one is served and sees its data, and the daemon's client
// count returns to zero when they leave.
func TestManyClients(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	const n, bs = 200, 64 << 10
	sessions := make([]*session, n)
	for i := range sessions {
		sessions[i] = d.connect(t, sessionOpts{structured: i%2 == 0, blockSize: i%3 == 0})
	}
	d.waitClients(t, n)
	data := randBytes(t, n*bs)
	for i, s := range sessions {
		s.submit(cmdWrite, cmdFlagFUA, uint64(i*bs), bs, data[i*bs:(i+1)*bs])
	}
	for i, s := range sessions {
		if r := s.next(); r.errno != 0 {
			t.Fatalf("client %d: write errno %d", i, r.errno)
		}
	}
	for i, s := range sessions {
		j := (i + 1) % n // read a neighbour's block
		if got := s.mustRead(uint64(j*bs), bs); !bytes.Equal(got, data[j*bs:(j+1)*bs]) {
			t.Fatalf("client %d reads client %d's block differently", i, j)
		}
		s.disconnect()
	}
	d.waitClients(t, 0)
}

// TestStuckClient: a client that pipelines far more reads than the daemon
// buffers per connection and never reads a reply must not hold up anyone
// else, and its departure frees everything it held.
func TestStuckClient(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	baseFDs := d.fdCount(t)
	stuck := d.connect(t, sessionOpts{structured: true})
	var b []byte
	for i := 0; i < 256; i++ { // 256 MiB of replies nobody reads
		b = stuck.encode(b, cmdRead, 0, uint64(i%200)<<20, 1<<20, nil)
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- stuck.send(b) }()
	// Others: reads and writes, including of the ranges the stuck client
	// reads, and flushes.
	for i := 0; i < 5; i++ {
		d.checkServing(t)
	}
	s := d.connect(t, sessionOpts{})
	want := randBytes(t, 1<<20)
	s.mustWrite(5<<20, want)
	if e := s.flush(); e != 0 {
		t.Fatalf("flush beside a stuck client: errno %d", e)
	}
	if got := s.mustRead(5<<20, 1<<20); !bytes.Equal(got, want) {
		t.Fatalf("read back differs")
	}
	s.disconnect()
	stuck.close()
	<-sendErr // fails or not: the daemon may have stopped reading from it
	d.waitClients(t, 0)
	d.waitFDs(t, baseFDs)
	d.checkServing(t)
}
