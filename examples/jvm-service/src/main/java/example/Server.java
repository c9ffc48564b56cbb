package example;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

/**
 * The jvm-service example: the JDK's own HTTP server on $PORT (5000 when unset). {@code /health}
 * answers ok; {@code /} names the release and instance, then the GREETING config value when set.
 */
public final class Server {
    private Server() {}

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(env("PORT", "5000"));
        String release = "v" + env("PAAS_RELEASE", "0");
        String instance = env("PAAS_INSTANCE_ID", InetAddress.getLocalHost().getHostName());

        HttpServer server = HttpServer.create(new InetSocketAddress(port), 0);
        server.createContext("/health", exchange -> reply(exchange, 200, "ok\n"));
        server.createContext("/", exchange -> {
            if (!exchange.getRequestURI().getPath().equals("/")) {
                reply(exchange, 404, "not found\n");
                return;
            }
            StringBuilder body = new StringBuilder()
                    .append("hello from ").append(release).append(" instance ").append(instance).append('\n');
            String greeting = System.getenv("GREETING");
            if (greeting != null && !greeting.isEmpty()) {
                body.append(greeting).append('\n');
            }
            reply(exchange, 200, body.toString());
        });
        server.start();
        // Stop promptly on the platform's SIGTERM.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
        // One line on start, which `paas logs` shows.
        System.out.println("jvm-service " + release + " instance " + instance + " listening on port " + port);
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private static void reply(HttpExchange exchange, int status, String text) throws IOException {
        byte[] body = text.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        exchange.sendResponseHeaders(status, body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(body);
        }
    }
}
