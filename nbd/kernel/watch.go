package kernel

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkDeadUnknown is delivered by WatchLinkDead when the kernel dropped
// notifications (socket receive buffer overrun, ENOBUFS): some device may
// have lost its link without a notice. Check every attached device.
const LinkDeadUnknown = -1

// WatchLinkDead subscribes to the multicast group "nbd_mc_group" and
// delivers the index of every device whose socket the kernel marks dead
// (NBD_CMD_LINK_DEAD), or LinkDeadUnknown after lost notifications. The
// kernel sends LINK_DEAD when a socket fails while the device is not being
// disconnected; a RECONFIGURE with a new socket (see Attach) resumes it
// within the device's dead-connection timeout.
//
// Cancel ctx to stop: the channel is then closed. It is also closed if the
// socket fails; check ctx.Err() to tell the two apart and watch again.
//
// The group is joined with setsockopt(NETLINK_ADD_MEMBERSHIP): group ids are
// assigned dynamically and exceed 32 on current kernels, which the legacy
// bind-time bit mask (nl.Subscribe's groups) cannot express.
func WatchLinkDead(ctx context.Context) (<-chan int, error) {
	fam, err := lookupFamily()
	if err != nil {
		return nil, err
	}
	c := newConn(fam, nil)
	if c.group == 0 {
		return nil, fmt.Errorf("nbd/kernel: family %q has no multicast group %q", familyName, mcastGroupName)
	}
	return watchLinkDead(ctx, c.family, c.group)
}

func watchLinkDead(ctx context.Context, family uint16, group uint32) (<-chan int, error) {
	s, err := nl.Subscribe(unix.NETLINK_GENERIC) // no legacy groups: bound, non-blocking
	if err != nil {
		return nil, fmt.Errorf("nbd/kernel: open netlink socket: %w", err)
	}
	if err := unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(group)); err != nil {
		s.Close()
		return nil, fmt.Errorf("nbd/kernel: join multicast group %q (id %d): %w", mcastGroupName, group, err)
	}
	ch := make(chan int, 16)
	stop := context.AfterFunc(ctx, s.Close) // unblocks Receive
	go func() {
		defer close(ch)
		defer stop()
		defer s.Close()
		send := func(index int) bool {
			select {
			case ch <- index:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			msgs, from, err := s.Receive()
			if errors.Is(err, unix.ENOBUFS) {
				if !send(LinkDeadUnknown) {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			if from.Pid != 0 { // only the kernel speaks on this group
				continue
			}
			for _, m := range msgs {
				if m.Header.Type != family {
					continue
				}
				index, err := decodeIndexMsg(m.Data, cmdLinkDead)
				if err != nil {
					continue
				}
				if !send(index) {
					return
				}
			}
		}
	}()
	return ch, nil
}
