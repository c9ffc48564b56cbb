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
	"syscall"
	"time"
)

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
// NAME, standing in for the real upstream calls whose failures the talk's counter tracks.
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
