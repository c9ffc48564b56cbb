// Command server is the go-service example: a net/http server on $PORT with /health, / and
// /metrics. /metrics exposes the talk's counter fetch_errors_total{upstream} in Prometheus text
// format, written by hand (metrics.go) so the module needs nothing but the standard library.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// maxSlowMillis bounds how long GET /slow?ms=N waits before it answers.
const maxSlowMillis = 10000

func main() {
	port := envOr("PORT", "5000")
	release := "v" + envOr("PAAS_RELEASE", "0")
	instance := os.Getenv("PAAS_INSTANCE_ID")
	if instance == "" {
		instance, _ = os.Hostname()
	}
	errors := newCounter("fetch_errors_total", "Fetches from an upstream that failed.", "upstream")

	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           newMux(release, instance, errors),
		ReadHeaderTimeout: 5 * time.Second,
	}
	// One line on start, which `paas logs` shows.
	log.SetFlags(0)
	log.Printf("go-service %s instance %s listening on port %s", release, instance, port)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatalf("go-service: %v", err)
	}
}

// newMux routes the service's endpoints. GET /fetch?upstream=NAME counts a failed fetch from
// NAME, standing in for the real upstream calls whose failures the talk's counter tracks;
// GET /slow?ms=N answers after N milliseconds, standing in for a slow upstream call (the
// zero-downtime bench keeps such requests in flight through every deploy).
func newMux(release, instance string, errors *counter) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		errors.writeTo(w)
	})
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		upstream := r.URL.Query().Get("upstream")
		if upstream == "" {
			http.Error(w, "name the upstream: /fetch?upstream=NAME", http.StatusBadRequest)
			return
		}
		errors.inc(upstream)
		http.Error(w, "upstream "+upstream+" failed", http.StatusBadGateway)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > maxSlowMillis {
			http.Error(w, fmt.Sprintf("ms must be a whole number from 0 to %d", maxSlowMillis), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprintf(w, "slow answer after %d ms from %s instance %s\n", ms, release, instance)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "hello from %s instance %s\n", release, instance)
		if greeting := os.Getenv("GREETING"); greeting != "" {
			fmt.Fprintln(w, greeting)
		}
	})
	return mux
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
