package sjbars;

import com.aizuda.snailjob.client.core.annotation.Retryable;
import com.aizuda.snailjob.client.core.plugin.RequestHeaderPlugins;
import com.aizuda.snailjob.client.core.plugin.ResponseHeaderPlugins;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.http.client.ClientHttpRequestInterceptor;
import org.springframework.stereotype.Component;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RequestHeader;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;
import org.springframework.web.client.RestTemplate;

import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The Java side of tests/e2e/test_retry_chain_real.py: a service with two @Retryable methods
 * and an HTTP API, on SnailJob's Java client (retry-core), wired as its users wire it:
 * a RestTemplate interceptor that calls RequestHeaderPlugins (outgoing "snail-job" header)
 * and ResponseHeaderPlugins (the "snail-job-status" a downstream answered).
 *
 * GET /chain/failing?on=true|false  the downstream work fails while on (default on)
 * GET /chain/work?key=K             calls the @Retryable work(K) (scene javaChainWork)
 * GET /chain/upstream?url=U         calls the @Retryable callOut(U) (scene javaChainUpstream),
 *                                   which GETs U through the RestTemplate
 * GET /chain/stats                  counters and the snail-job headers received
 */
@RestController
public class RetryChain {

    static final AtomicBoolean FAILING = new AtomicBoolean(true);
    static final AtomicInteger WORK_RUNS = new AtomicInteger();
    static final AtomicInteger CALL_OUT_RUNS = new AtomicInteger();
    static final List<String> HEADERS = new CopyOnWriteArrayList<>();

    private final ChainWork work;

    public RetryChain(ChainWork work) {
        this.work = work;
    }

    @GetMapping("/chain/failing")
    public String failing(@RequestParam("on") boolean on) {
        FAILING.set(on);
        return String.valueOf(on);
    }

    @GetMapping("/chain/work")
    public String work(@RequestParam("key") String key,
                       @RequestHeader(value = "snail-job", required = false) String header) {
        HEADERS.add(header == null ? "" : header);
        return work.work(key);
    }

    @GetMapping("/chain/upstream")
    public String upstream(@RequestParam("url") String url) {
        return work.callOut(url);
    }

    @GetMapping("/chain/stats")
    public Map<String, Object> stats() {
        return Map.of("workRuns", WORK_RUNS.get(), "callOutRuns", CALL_OUT_RUNS.get(), "headers", List.copyOf(HEADERS));
    }

    @Component
    public static class ChainWork {
        private final RestTemplate rest;

        public ChainWork(RestTemplate rest) {
            this.rest = rest;
        }

        @Retryable(scene = "javaChainWork", localTimes = 1, localInterval = 1, async = false)
        public String work(String key) {
            WORK_RUNS.incrementAndGet();
            if (FAILING.get()) {
                throw new IllegalStateException("java work failing for " + key);
            }
            return "java ok " + key;
        }

        @Retryable(scene = "javaChainUpstream", localTimes = 1, localInterval = 1, async = false)
        public String callOut(String url) {
            CALL_OUT_RUNS.incrementAndGet();
            return rest.getForObject(url, String.class);
        }
    }

    @Configuration
    public static class Http {
        @Bean
        public RestTemplate restTemplate() {
            RestTemplate rest = new RestTemplate();
            ClientHttpRequestInterceptor snailJob = (request, body, execution) -> {
                RequestHeaderPlugins.requestHeader().forEach((k, v) -> request.getHeaders().set(k, v));
                var response = execution.execute(request, body);
                String status = response.getHeaders().getFirst("snail-job-status");
                if (status != null) {
                    ResponseHeaderPlugins.responseHeader(Map.of("snail-job-status", List.of(status)));
                }
                return response;
            };
            rest.getInterceptors().add(snailJob);
            return rest;
        }
    }
}
