package example;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * Integration test of jvm-service, in the jar so the platform runs it from the image against the
 * control instance of a new release: {@code java -cp target/app.jar example.IntegrationTest}
 * with PAAS_TARGET_URL set. One case per endpoint; exits 1 when any fails.
 */
public final class IntegrationTest {
    private IntegrationTest() {}

    record Case(String name, String path, int status, String body) {}

    public static void main(String[] args) throws InterruptedException {
        String base = Server.env("PAAS_TARGET_URL", "").replaceAll("/+$", "");
        if (base.isEmpty()) {
            System.err.println("PAAS_TARGET_URL must name the instance under test, e.g. http://127.0.0.1:5000");
            System.exit(2);
        }
        List<Case> cases = new ArrayList<>(List.of(
                new Case("health", "/health", 200, "ok"),
                new Case("home", "/", 200, "hello from v"),
                new Case("unknown path", "/no-such-page", 404, "")));
        String release = System.getenv("PAAS_RELEASE");
        if (release != null && !release.isEmpty()) {
            cases.add(new Case("serves this release", "/", 200, "hello from v" + release + " "));
        }

        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        int passed = 0;
        int failed = 0;
        for (Case c : cases) {
            String problem;
            try {
                HttpRequest request = HttpRequest.newBuilder(URI.create(base + c.path()))
                        .timeout(Duration.ofSeconds(5)).build();
                HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
                if (response.statusCode() != c.status()) {
                    problem = "answered " + response.statusCode() + ", want " + c.status();
                } else if (!response.body().contains(c.body())) {
                    problem = "body lacks '" + c.body() + "': " + response.body();
                } else {
                    problem = null;
                }
            } catch (java.io.IOException e) {
                problem = e.toString();
            }
            if (problem == null) {
                passed++;
                System.out.println("ok - " + c.name());
            } else {
                failed++;
                System.out.println("not ok - " + c.name() + ": GET " + c.path() + " " + problem);
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
