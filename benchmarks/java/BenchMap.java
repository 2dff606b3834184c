package sjbars;

import com.aizuda.snailjob.client.job.core.MapHandler;
import com.aizuda.snailjob.client.job.core.annotation.JobExecutor;
import com.aizuda.snailjob.client.job.core.annotation.MapExecutor;
import com.aizuda.snailjob.client.job.core.dto.JobArgs;
import com.aizuda.snailjob.client.job.core.dto.MapArgs;
import com.aizuda.snailjob.model.dto.ExecuteResult;
import org.springframework.stereotype.Component;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

/**
 * Map fan-out benchmark job, the Java twin of the Python benchmark's map job.
 *
 * <p>jobParams is an integer N (default 10000; a prefix ending in ':' is ignored, so "fanout:1000" means 1000).
 * The root task (ROOT_MAP) maps the numbers 0..N-1 in chunks of at most 500 as CHUNK sub-tasks (the client
 * refuses more than 500 sub-tasks in one doMap call), each CHUNK maps its numbers as ITEM sub-tasks, and each
 * ITEM succeeds with its number as the result.  Written against the map API that 1.10.x and 2.0.x share:
 * {@code @JobExecutor} on the class, {@code @MapExecutor(taskName)} methods taking (MapArgs, MapHandler).
 */
@Component
@JobExecutor(name = "benchMap")
public class BenchMap {

    static final int DEFAULT_ITEMS = 10000;
    static final int MAX_PER_MAP = 500;

    /** Not a plain job: dispatched with a map task type only. */
    public ExecuteResult jobExecute(JobArgs args) {
        return ExecuteResult.failure("benchMap runs as a map job only");
    }

    @MapExecutor
    public ExecuteResult root(MapArgs args, MapHandler<List<Integer>> handler) {
        int n = items(args.getJobParams());
        if (n <= 0) {
            return ExecuteResult.success(0);
        }
        List<List<Integer>> chunks = new ArrayList<>();
        for (int start = 0; start < n; start += MAX_PER_MAP) {
            List<Integer> chunk = new ArrayList<>();
            for (int i = start; i < Math.min(n, start + MAX_PER_MAP); i++) {
                chunk.add(i);
            }
            chunks.add(chunk);
        }
        if (chunks.size() > MAX_PER_MAP) {
            return ExecuteResult.failure("N too large: at most " + MAX_PER_MAP * MAX_PER_MAP + " items");
        }
        return handler.doMap(chunks, "CHUNK");
    }

    @MapExecutor(taskName = "CHUNK")
    public ExecuteResult chunk(MapArgs args, MapHandler<Integer> handler) {
        List<Integer> numbers = numbers(args.getMapResult());
        if (numbers.isEmpty()) {
            return ExecuteResult.failure("empty chunk: " + args.getMapResult());
        }
        return handler.doMap(numbers, "ITEM");
    }

    @MapExecutor(taskName = "ITEM")
    public ExecuteResult item(MapArgs args) {
        List<Integer> numbers = numbers(args.getMapResult());
        if (numbers.size() != 1) {
            return ExecuteResult.failure("not one item: " + args.getMapResult());
        }
        return ExecuteResult.success(numbers.get(0));
    }

    static int items(Object jobParams) {
        String text = jobParams == null ? "" : String.valueOf(jobParams).trim();
        int colon = text.lastIndexOf(':');
        if (colon >= 0) {
            text = text.substring(colon + 1).trim();
        }
        if (text.isEmpty()) {
            return DEFAULT_ITEMS;
        }
        try {
            return Integer.parseInt(text);
        } catch (NumberFormatException e) {
            return DEFAULT_ITEMS;
        }
    }

    /** The numbers in a sub-task's argument: a list, a number, or their JSON text. */
    static List<Integer> numbers(Object value) {
        List<Integer> out = new ArrayList<>();
        if (value instanceof Collection<?>) {
            for (Object each : (Collection<?>) value) {
                out.addAll(numbers(each));
            }
        } else if (value instanceof Number) {
            out.add(((Number) value).intValue());
        } else if (value != null) {
            for (String part : String.valueOf(value).replace("[", " ").replace("]", " ").replace("\"", " ").split(",")) {
                String trimmed = part.trim();
                if (!trimmed.isEmpty()) {
                    try {
                        out.add(Integer.parseInt(trimmed));
                    } catch (NumberFormatException e) {
                        return new ArrayList<>();
                    }
                }
            }
        }
        return out;
    }
}
