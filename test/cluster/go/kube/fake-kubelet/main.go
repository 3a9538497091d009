// Command fake-kubelet is a stand-in kubelet with no container runtime, so that a real kube-apiserver
// can proxy kubectl exec / attach / port-forward / logs / cp to it in tests. kube-apiserver finds it
// through a Node whose status has InternalIP 127.0.0.1 and daemonEndpoints.kubeletEndpoint.Port (the
// test harness creates those). The streaming endpoints use the kubelet's own server code
// (k8s.io/kubelet/pkg/cri/streaming) with the kubelet streaming server's defaults (SPDY or WebSocket,
// channel.k8s.io v1..v4, portforward.k8s.io, 4 h idle timeout, 30 s stream creation timeout).
//
// Every pod and container is this machine; the names in a path only choose the attach process and
// the log file.
//
//	/exec/{ns}/{pod}/{container}?command=...
//	    Runs the command here as a child process (cwd --root, own process group), with stdin, stdout and
//	    stderr from the streams; tty=true gives it a pty (resizes applied). A non-zero exit status travels
//	    as the exit code (kubectl exits with it; killed by signal N = 128+N). A command that cannot start
//	    is an internal error, as with containerd. kubectl cp is tar through exec, so it works on any path.
//	    The exec ends when the process exits, even if the client's stdin is still open. As with a real
//	    kubelet, a client that goes away does not kill the process: it sees EOF on stdin, if it had one.
//	/attach/{ns}/{pod}/{container}
//	    The container's "main process" is `cat`: one per (ns, pod, container), started on the first
//	    attach, kept until it exits or fake-kubelet stops. Its stdout goes to every attached client, each
//	    client's stdin goes to its stdin, so `echo hi | kubectl attach -i pod/x` prints hi and exits 0:
//	    when a client's stdin ends, its session ends as soon as cat has echoed all it was sent (at most
//	    5 s later); cat's stdin stays open for the next client. Without stdin a session lasts until the
//	    client goes away (noticed at the next output) or cat exits. tty is accepted and ignored.
//	/portForward/{ns}/{pod}
//	    Pod port P is 127.0.0.1:P here (a refused connection is reported on the error stream). EOF in one
//	    direction is passed on as a half-close (socat's rule, as with the old dockershim); the other
//	    direction then gets up to 1 s to finish (containerd's rule) before both are closed.
//	/containerLogs/{ns}/{pod}/{container}
//	    The file <root>/logs/<ns>_<pod>_<container>.log (404 if absent), text/plain; tailLines is
//	    honoured; follow=true polls the file every 50 ms and streams what is appended until the client
//	    goes away. Other options (timestamps, sinceSeconds, limitBytes, previous) are ignored.
//	/healthz
//	    200 ok.
//
// The kubelet's {uid} variants (/exec/{ns}/{pod}/{uid}/{container}, ...) are served too; other paths
// are 404 (a known path with the wrong method is 405). Every request needs a client certificate signed
// by --client-ca-file: kube-apiserver presents its --kubelet-client-certificate. HTTP/1.1 only, since
// SPDY and WebSocket upgrades need it. After listening it prints `listening on 127.0.0.1:<port>` on
// stdout; logs go to stderr. SIGTERM kills exec'd processes and the attach processes, and exits 0.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// The kubelet streaming server's defaults (k8s.io/kubelet/pkg/cri/streaming.DefaultConfig).
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommandconsts.DefaultStreamCreationTimeout
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	certFile := flag.String("tls-cert-file", "", "serving certificate (PEM)")
	keyFile := flag.String("tls-private-key-file", "", "serving private key (PEM)")
	caFile := flag.String("client-ca-file", "", "CA bundle; every client must present a certificate it signed")
	root := flag.String("root", ".", "working directory of exec'd commands; logs are read from <root>/logs")
	flag.Parse()
	log.SetPrefix("fake-kubelet: ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if *certFile == "" || *keyFile == "" || *caFile == "" {
		log.Fatal("--tls-cert-file, --tls-private-key-file and --client-ca-file are required")
	}
	rootDir, err := filepath.Abs(*root)
	if err != nil {
		log.Fatal(err)
	}
	if st, err := os.Stat(rootDir); err != nil || !st.IsDir() {
		log.Fatalf("--root %s is not a directory", rootDir)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		log.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	if !clientCAs.AppendCertsFromPEM(caPEM) {
		log.Fatalf("no certificate in %s", *caFile)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	k := &kubelet{root: rootDir, procs: map[string]*mainProc{}}
	srv := &http.Server{
		Handler: k.routes(),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCAs,
			MinVersion:   tls.VersionTLS12,
		},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2: upgrades need HTTP/1.1
		ReadHeaderTimeout: 30 * time.Second,
		// Requests, hijacked ones included, inherit ctx: SIGTERM kills exec'd processes and ends log follows.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr()) // the harness waits for this line
	log.Printf("serving on %s, root %s", ln.Addr(), rootDir)

	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		stop()
		log.Print("terminating")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			srv.Close()
		}
		k.stopMainProcs()
		close(stopped)
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-stopped
}

type kubelet struct {
	root  string
	mu    sync.Mutex
	procs map[string]*mainProc // attach: "<pod>_<ns>/<container>" -> its main process
}

func (k *kubelet) routes() http.Handler {
	mux := http.NewServeMux()
	for _, method := range []string{"GET", "POST"} { // the kubelet serves both for the streaming endpoints
		mux.HandleFunc(method+" /exec/{ns}/{pod}/{container}", k.serveExec)
		mux.HandleFunc(method+" /exec/{ns}/{pod}/{uid}/{container}", k.serveExec)
		mux.HandleFunc(method+" /attach/{ns}/{pod}/{container}", k.serveAttach)
		mux.HandleFunc(method+" /attach/{ns}/{pod}/{uid}/{container}", k.serveAttach)
		mux.HandleFunc(method+" /portForward/{ns}/{pod}", k.servePortForward)
		mux.HandleFunc(method+" /portForward/{ns}/{pod}/{uid}", k.servePortForward)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", k.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s (client %s)", r.Method, r.URL.RequestURI(), r.TLS.PeerCertificates[0].Subject.CommonName)
		mux.ServeHTTP(w, r)
	})
}

// podFullName is what the kubelet calls a pod internally.
func podFullName(r *http.Request) string { return r.PathValue("pod") + "_" + r.PathValue("ns") }

func (k *kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommandserver.ServeExec(w, r, k, podFullName(r), types.UID(r.PathValue("uid")), r.PathValue("container"),
		r.URL.Query()["command"], opts, streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

func (k *kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommandserver.ServeAttach(w, r, k, podFullName(r), types.UID(r.PathValue("uid")), r.PathValue("container"),
		opts, streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

func (k *kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, k, podFullName(r), types.UID(r.PathValue("uid")),
		opts, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

// ExecInContainer runs cmd here (remotecommandserver.Executor).
func (k *kubelet) ExecInContainer(ctx context.Context, _ string, _ types.UID, _ string, argv []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = k.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the whole group, so `sh -c 'sleep 99'` ends too; give up on pipes a background child keeps open.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var wait func() error
	var err error
	if tty {
		wait, err = startWithPTY(cmd, in, out, resize)
	} else {
		wait, err = startWithPipes(cmd, in, out, errOut)
	}
	if err != nil {
		return fmt.Errorf("failed to exec in container: %w", err) // containerd's wording; kubectl shows an internal error
	}
	err = wait()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code := exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		// Only a utilexec.ExitError makes ServeExec send the exit code.
		return utilexec.CodeExitError{Err: err, Code: code}
	}
	return err
}

func startWithPipes(cmd *exec.Cmd, in io.Reader, out, errOut io.Writer) (func() error, error) {
	cmd.Stdout, cmd.Stderr = out, errOut // nil (stream not requested) is /dev/null
	var stdin io.WriteCloser
	if in != nil {
		// Not cmd.Stdin = in: Wait would wait for the client to close stdin, even after the process exited.
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if stdin != nil {
		go func() {
			io.Copy(stdin, in)
			stdin.Close() // the client's EOF (e.g. kubectl cp's tar stream) is the process's EOF
		}()
	}
	return cmd.Wait, nil
}

func startWithPTY(cmd *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) (func() error, error) {
	ptmx, tty, err := openPTY()
	if err != nil {
		return nil, err
	}
	defer tty.Close() // the child has its own copy
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true} // the pty (fd 0) becomes its controlling terminal
	if err := cmd.Start(); err != nil {
		ptmx.Close()
		return nil, err
	}
	if resize != nil {
		go func() {
			for size := range resize {
				setWinsize(ptmx, size)
			}
		}()
	}
	if in != nil {
		go io.Copy(ptmx, in)
	}
	if out == nil {
		out = io.Discard
	}
	copied := make(chan struct{})
	go func() {
		io.Copy(out, ptmx) // ends (EIO) once no process holds the pty any more
		close(copied)
	}()
	return func() error {
		err := cmd.Wait()
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
		}
		ptmx.Close()
		return err
	}, nil
}

// openPTY opens a new pseudo-terminal pair (what posix_openpt, unlockpt and ptsname do).
func openPTY() (ptmx, tty *os.File, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var n uint32
	rc, err := ptmx.SyscallConn() // not Fd(): that would make reads blocking, and Close could not interrupt them
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
				n, err = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
			}
		})
		err = errors.Join(err, cerr)
	}
	if err == nil {
		tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	}
	if err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("pty: %w", err)
	}
	return ptmx, tty, nil
}

func setWinsize(ptmx *os.File, size remotecommand.TerminalSize) {
	if rc, err := ptmx.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
		})
	}
}

// mainProc is a container's main process for attach: `cat`, shared by every attach session.
type mainProc struct {
	stdin   io.WriteCloser
	inMu    sync.Mutex // one writer at a time, so `written` counts bytes in the order cat reads them
	written int64      // bytes written to cat's stdin (guarded by inMu)
	mu      sync.Mutex
	echoed  int64         // bytes of cat's stdout delivered to every attached client
	changed chan struct{} // closed and replaced whenever echoed grows
	outs    map[*session]bool
	done    chan struct{} // closed when cat has exited
}

type session struct {
	out  io.Writer
	gone chan struct{} // closed when a write to out failed: the client went away
}

func (k *kubelet) mainProc(key string) (*mainProc, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.procs[key]; p != nil {
		select {
		case <-p.done: // exited: start another, as a restarted container would
		default:
			return p, nil
		}
	}
	cmd := exec.Command("cat")
	cmd.Dir = k.root
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	log.Printf("attach: started cat (pid %d) as the main process of %s", cmd.Process.Pid, key)
	p := &mainProc{stdin: stdin, changed: make(chan struct{}), outs: map[*session]bool{}, done: make(chan struct{})}
	go func() {
		p.pump(stdout)
		log.Printf("attach: main process of %s exited: %v", key, cmd.Wait())
		close(p.done)
	}()
	k.procs[key] = p
	return p, nil
}

func (k *kubelet) stopMainProcs() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.procs {
		p.stdin.Close() // cat exits at EOF
	}
}

// pump copies cat's stdout to every attached session, then counts it as echoed.
func (p *mainProc) pump(stdout io.Reader) {
	buf := make([]byte, 32*1024)
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			p.mu.Lock()
			sessions := make([]*session, 0, len(p.outs))
			for s := range p.outs {
				sessions = append(sessions, s)
			}
			p.mu.Unlock()
			for _, s := range sessions {
				if _, err := s.out.Write(buf[:n]); err != nil {
					p.detach(s)
				}
			}
			p.mu.Lock()
			p.echoed += int64(n)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (p *mainProc) detach(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.outs[s] {
		delete(p.outs, s)
		close(s.gone)
	}
}

// AttachContainer attaches a client to the container's main process (remotecommandserver.Attacher).
func (k *kubelet) AttachContainer(ctx context.Context, name string, _ types.UID, container string, in io.Reader, out, _ io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize) error {
	p, err := k.mainProc(name + "/" + container)
	if err != nil {
		return err
	}
	s := &session{out: out, gone: make(chan struct{})}
	if out != nil {
		p.mu.Lock()
		p.outs[s] = true
		p.mu.Unlock()
		defer p.detach(s)
	}
	if in == nil {
		select {
		case <-ctx.Done():
		case <-p.done:
		case <-s.gone:
		}
		return nil
	}
	var sent int64 // cat's input position after this client's last write
	buf := make([]byte, 32*1024)
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			p.inMu.Lock()
			m, werr := p.stdin.Write(buf[:n])
			p.written += int64(m)
			sent = p.written
			p.inMu.Unlock()
			if werr != nil {
				break // cat has exited
			}
		}
		if rerr != nil {
			break // EOF: the client sent everything; an error: it went away
		}
	}
	// Stay until cat has echoed everything this client sent, so it gets its own output back.
	deadline := time.After(5 * time.Second)
	for {
		p.mu.Lock()
		echoed, changed := p.echoed, p.changed
		p.mu.Unlock()
		if echoed >= sent {
			return nil
		}
		select {
		case <-changed:
		case <-p.done:
			return nil
		case <-s.gone:
			return nil
		case <-ctx.Done():
			return nil
		case <-deadline:
			return nil
		}
	}
}

// PortForward connects a stream to 127.0.0.1:port (portforward.PortForwarder).
func (k *kubelet) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	conn, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return err // ServePortForward reports it on the error stream, as for a closed port in a real pod
	}
	defer conn.Close()
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		conn.(*net.TCPConn).CloseWrite() // pass the client's EOF on
		done <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		stream.Close() // for SPDY, a half-close: the client still may send
		done <- err
	}()
	err = <-done
	select {
	case e := <-done:
		if err == nil {
			err = e
		}
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	return err
}

// serveLogs serves <root>/logs/<ns>_<pod>_<container>.log.
func (k *kubelet) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	for _, s := range []string{ns, pod, container} {
		if s == "" || s == "." || s == ".." || filepath.Base(s) != s { // a %2F in the path must not leave <root>/logs
			http.Error(w, "bad name "+strconv.Quote(s), http.StatusBadRequest)
			return
		}
	}
	f, err := os.Open(filepath.Join(k.root, "logs", ns+"_"+pod+"_"+container+".log"))
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, fmt.Sprintf("container %q in pod %q has no log", container, pod), http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	data, err := io.ReadAll(f) // what is there now; a follow continues from here
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	q := r.URL.Query()
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		data = lastLines(data, n)
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	w.Header().Set("Content-Type", "text/plain")
	if _, err := w.Write(data); err != nil || !follow {
		return
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	buf := make([]byte, 32*1024)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			rc.Flush()
			continue
		}
		if err != nil && err != io.EOF {
			return
		}
		select {
		case <-r.Context().Done(): // the client went away (or SIGTERM)
			return
		case <-poll.C:
		}
	}
}

// lastLines returns the last n lines of data (a last line without a newline counts).
func lastLines(data []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if data[i] == '\n' {
			if n--; n == 0 {
				return data[i+1:]
			}
		}
	}
	return data
}
