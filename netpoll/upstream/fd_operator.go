// Copyright 2022 CloudWeGo Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//    http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

package netpoll

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// FDOperator is a collection of operations on file descriptors.
type FDOperator struct {
	// FD is file descriptor, poll will bind when register.
	FD int

	// The FDOperator provides three operations of reading, writing, and hanging.
	// The poll actively fire the FDOperator when fd changes, no check the return value of FDOperator.
	OnRead  func(p Poll) error
	OnWrite func(p Poll) error
	OnHup   func(p Poll) error

	// The following is the required fn, which must exist when used, or directly panic.
	// Fns are only called by the poll when handles connection events.
	Inputs   func(vs [][]byte) (rs [][]byte)
	InputAck func(n int) (err error)

	// Outputs will locked if len(rs) > 0, which need unlocked by OutputAck.
	// supportZeroCopy is not implemented, and it will be ignored
	Outputs   func(vs [][]byte) (rs [][]byte, supportZeroCopy bool)
	OutputAck func(n int) (err error)

	// poll is the registered location of the file descriptor.
	poll Poll

	// protect only detach once
	detached int32

	// Gatecast patch (read pause): interest is the set of interestWrite and
	// interestPause* bits, changed only under imu by setInterest, which
	// applies the resulting poll mask before releasing imu, so transitions
	// decided by different goroutines (flush, the poller, the application)
	// reach the poller in the order they were made. applied is the set the
	// poller was last told (bsd needs the difference). Read with atomic
	// loads for cheap checks.
	imu      sync.Mutex
	interest uint32
	previous uint32 // interest before the transition being applied, under imu

	// private, used by operatorCache
	next  *FDOperator
	state int32 // CAS: 0(unused) 1(inuse) 2(do-done)
	index int32 // index in operatorCache
}

func (op *FDOperator) Control(event PollEvent) error {
	switch event {
	case PollDetach:
		if atomic.AddInt32(&op.detached, 1) > 1 {
			return nil
		}
	case PollR2RW:
		// Gatecast patch: write watching is one dimension of the interest
		// set, so that it never resumes a paused read.
		return op.setInterest(interestWrite, 0)
	case PollRW2R:
		return op.setInterest(0, interestWrite)
	}
	return op.poll.Control(op, event)
}

// Interest bits (Gatecast patch). With no bit set the operator watches
// reads only, as registered by PollReadable.
const (
	interestWrite      uint32 = 1 << iota // the output buffer waits for the socket to be writable
	interestPauseUser                     // the application paused reads (Connection.PauseRead)
	interestPauseLimit                    // the input buffer reached its limit (SetReadBufferLimit)

	interestPaused = interestPauseUser | interestPauseLimit
)

// setInterest sets then clears bits of the interest set and, when the poll
// mask changes, applies it with PollModify. A detached operator is left
// alone.
func (op *FDOperator) setInterest(set, clear uint32) error {
	op.imu.Lock()
	defer op.imu.Unlock()
	old := atomic.LoadUint32(&op.interest)
	next := (old | set) &^ clear
	if next == old {
		return nil
	}
	atomic.StoreUint32(&op.interest, next)
	if atomic.LoadInt32(&op.detached) > 0 || op.poll == nil {
		return nil
	}
	if maskOf(old) == maskOf(next) {
		return nil
	}
	op.previous = old
	return op.poll.Control(op, PollModify)
}

// maskOf reduces an interest set to what the poller must watch: reads
// unless paused, writes when waiting to write.
func maskOf(interest uint32) uint32 {
	m := uint32(0)
	if interest&interestPaused == 0 {
		m |= 1 // read
	}
	if interest&interestWrite != 0 {
		m |= 2 // write
	}
	return m
}

func (op *FDOperator) readPaused() bool {
	return atomic.LoadUint32(&op.interest)&interestPaused != 0
}

func (op *FDOperator) Free() {
	op.poll.Free(op)
}

func (op *FDOperator) do() (can bool) {
	return atomic.CompareAndSwapInt32(&op.state, 1, 2)
}

func (op *FDOperator) done() {
	atomic.StoreInt32(&op.state, 1)
}

func (op *FDOperator) inuse() {
	for !atomic.CompareAndSwapInt32(&op.state, 0, 1) {
		if atomic.LoadInt32(&op.state) == 1 {
			return
		}
		runtime.Gosched()
	}
}

func (op *FDOperator) unused() {
	for !atomic.CompareAndSwapInt32(&op.state, 1, 0) {
		if atomic.LoadInt32(&op.state) == 0 {
			return
		}
		runtime.Gosched()
	}
}

func (op *FDOperator) isUnused() bool {
	return atomic.LoadInt32(&op.state) == 0
}

func (op *FDOperator) reset() {
	op.FD = 0
	op.OnRead, op.OnWrite, op.OnHup = nil, nil, nil
	op.Inputs, op.InputAck = nil, nil
	op.Outputs, op.OutputAck = nil, nil
	op.poll = nil
	op.detached = 0
	op.interest, op.previous = 0, 0
}
