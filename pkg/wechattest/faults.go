package wechattest

import (
	"fmt"
	"net/http"
	"time"
)

// FaultKind is a way the upstream misbehaves.
type FaultKind int

const (
	// FaultBusy answers errcode -1 (system busy); nothing is minted.
	FaultBusy FaultKind = iota + 1
	// FaultLatency delays the reply by Fault.Latency, then answers
	// normally. If the client gives up first, nothing is processed; if the
	// fake is closed meanwhile, the connection is dropped.
	FaultLatency
	// FaultHTML502 answers HTTP 502 with an HTML page, as a proxy in front
	// of WeChat does; nothing is minted.
	FaultHTML502
	// FaultTruncatedJSON processes the call normally (a classic call mints
	// and so invalidates the previous token) and then sends only the first
	// half of the JSON body, as a complete HTTP response.
	FaultTruncatedJSON
	// FaultEmptyToken answers {"access_token":"","expires_in":7200};
	// nothing is minted.
	FaultEmptyToken
	// FaultLostReply processes the call normally (a classic call mints and
	// so invalidates the previous token) and then closes the connection
	// without sending anything.
	FaultLostReply
	// FaultRaw answers Fault.Status and Fault.Body verbatim; nothing is
	// minted.
	FaultRaw
	// FaultErrcode answers errcode Fault.Code with HTTP 200; nothing is
	// minted.
	FaultErrcode
)

func (k FaultKind) String() string {
	switch k {
	case FaultBusy:
		return "busy"
	case FaultLatency:
		return "latency"
	case FaultHTML502:
		return "html502"
	case FaultTruncatedJSON:
		return "truncated-json"
	case FaultEmptyToken:
		return "empty-token"
	case FaultLostReply:
		return "lost-reply"
	case FaultRaw:
		return "raw"
	case FaultErrcode:
		return "errcode"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault is one injected misbehaviour of the token endpoints.
type Fault struct {
	Kind    FaultKind
	AppID   string        // "" = any app (and calls naming no app)
	Times   int           // how many matching calls it applies to; 0 means 1
	Latency time.Duration // FaultLatency: how long to wait before answering
	Status  int           // FaultRaw: HTTP status (0 means 200)
	Body    string        // FaultRaw: body, sent verbatim
	Code    int           // FaultErrcode: the errcode to answer
	// Endpoint limits the fault to "/cgi-bin/token" or
	// "/cgi-bin/stable_token"; "" = both. "/cgi-bin/ticket/getticket"
	// (wechat.EndpointTicket) faults getticket, which no other fault
	// touches; FaultEmptyToken then answers an empty ticket.
	Endpoint string
}

type queuedFault struct {
	Fault
	left int
}

// InjectFault queues f. Each token-endpoint call takes the oldest queued
// fault that matches its endpoint and appid, if any, and uses up one of
// its Times. Business endpoints are never faulted, except getticket by a
// fault whose Endpoint names it. It panics on a fault
// that cannot be applied (unknown kind, negative Times or Latency,
// unknown Endpoint, FaultErrcode without a Code), since that is a bug in
// the test.
func (s *Server) InjectFault(f Fault) {
	switch {
	case f.Kind < FaultBusy || f.Kind > FaultErrcode:
		panic(fmt.Sprintf("wechattest: InjectFault: unknown Kind %d", int(f.Kind)))
	case f.Times < 0:
		panic(fmt.Sprintf("wechattest: InjectFault(%v): Times %d is negative", f.Kind, f.Times))
	case f.Kind == FaultErrcode && f.Code == 0:
		panic("wechattest: InjectFault(errcode): Code is 0, which is not an error")
	case f.Latency < 0:
		panic(fmt.Sprintf("wechattest: InjectFault(%v): Latency %v is negative", f.Kind, f.Latency))
	case f.Endpoint != "" && f.Endpoint != pathToken && f.Endpoint != pathStableToken && f.Endpoint != pathTicket:
		panic(fmt.Sprintf("wechattest: InjectFault(%v): Endpoint %q is not %q, %q, %q or empty", f.Kind, f.Endpoint, pathToken, pathStableToken, pathTicket))
	}
	times := f.Times
	if times == 0 {
		times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &queuedFault{Fault: f, left: times})
}

// PendingFaults is how many fault applications are still queued (the sum
// of their remaining Times).
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.faults {
		n += f.left
	}
	return n
}

// takeFault consumes one application of the oldest fault matching the
// call.
func (s *Server) takeFault(endpoint, appID string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.faults {
		if q.Endpoint != "" && q.Endpoint != endpoint || q.Endpoint == "" && endpoint == pathTicket {
			continue // an Endpoint of "" means both token endpoints, never getticket
		}
		if q.AppID != "" && q.AppID != appID {
			continue
		}
		q.left--
		if q.left == 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		f := q.Fault
		return &f
	}
	return nil
}

// faultBefore applies the part of f that replaces normal processing. It
// reports whether the call should go on to be processed normally.
func (s *Server) faultBefore(w http.ResponseWriter, r *http.Request, f *Fault, appID string) bool {
	if f == nil {
		return true
	}
	switch f.Kind {
	case FaultLatency:
		timer := time.NewTimer(f.Latency)
		defer timer.Stop()
		select {
		case <-timer.C:
			return true
		case <-r.Context().Done():
			return false // the client gave up: nothing to answer, nothing processed
		case <-s.closing:
			dropConnection(w) // as a server going away would
			return false
		}
	case FaultBusy:
		writeReply(w, s.refuse(appID, -1, "system error"))
	case FaultErrcode:
		writeReply(w, s.refuse(appID, f.Code, "injected error"))
	case FaultHTML502:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(html502))
	case FaultRaw:
		status := f.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(f.Body))
	case FaultEmptyToken:
		writeReply(w, jsonReply(map[string]any{"access_token": "", "expires_in": expiresInSeconds(s.cfg.lifetime)}))
	case FaultTruncatedJSON, FaultLostReply:
		return true
	}
	return false
}

// finish sends rep, mangled as f asks.
func finish(w http.ResponseWriter, rep reply, f *Fault) {
	if f != nil {
		switch f.Kind {
		case FaultTruncatedJSON:
			rep.body = rep.body[:len(rep.body)/2]
		case FaultLostReply:
			dropConnection(w)
			return
		}
	}
	writeReply(w, rep)
}

// dropConnection closes the client's connection without a reply. Under a
// server that cannot hijack (HTTP/2), aborting the handler resets the
// stream instead, which the client sees the same way.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

const html502 = `<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
`
