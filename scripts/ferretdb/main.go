// Command bp-ferretdb runs FerretDB, a server speaking the MongoDB wire protocol over SQLite or
// PostgreSQL, for bp's MongoDB store tests. It wraps the embeddable package because the upstream
// command panics at start when built with `go install` (its version file is made by its release
// process).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (loopback)")
	handler := flag.String("handler", "sqlite", "backend: sqlite or postgresql")
	sqliteDir := flag.String("sqlite-dir", "", "directory of the SQLite databases (handler sqlite)")
	postgresURL := flag.String("postgresql-url", "", "PostgreSQL URL (handler postgresql)")
	flag.Parse()

	conf := ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Handler:  *handler,
	}
	switch *handler {
	case "sqlite":
		if *sqliteDir == "" {
			log.Fatal("-sqlite-dir is required with -handler sqlite")
		}
		if err := os.MkdirAll(*sqliteDir, 0o700); err != nil {
			log.Fatalf("creating %s: %v", *sqliteDir, err)
		}
		conf.SQLiteURL = "file:" + *sqliteDir + "/"
	case "postgresql":
		if *postgresURL == "" {
			log.Fatal("-postgresql-url is required with -handler postgresql")
		}
		conf.PostgreSQLURL = *postgresURL
	default:
		log.Fatalf("unknown -handler %q: want sqlite or postgresql", *handler)
	}

	f, err := ferretdb.New(&conf)
	if err != nil {
		log.Fatalf("starting FerretDB: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintf(os.Stderr, "bp-ferretdb: listening on %s (%s)\n", *listen, *handler)
	if err := f.Run(ctx); err != nil {
		log.Fatalf("FerretDB stopped: %v", err)
	}
}
