/* The init of a runsc sandbox in C: the protocol of _child.py, without Python's start-up (about 45 ms
 * and 70 ms of CPU per sandbox under gVisor's ptrace platform). The runsc backend builds it with the
 * machine's C compiler, statically linked, and falls back to _child.py where there is none.
 *
 * Fork at once; the child reads the call on stdin (a 4-byte big-endian length, then fields of a 4-byte
 * length and their bytes: the nonce, argc, the arguments, the number of variables, NAME=value each, then
 * name and content of each file), writes the files, hands the nonce to the parent on a close-on-exec pipe
 * and execs the tool. The parent waits for it with wait4 and writes one line on stderr: a newline, the
 * nonce and {"exit_code", "run_seconds", "cpu_seconds", "max_rss_kb"}. EOF before a whole call: exit 0.
 *
 * With `--serve REUSE [TOOL ARGV...]` (a warm sandbox that prestarts its tool, or one reused across calls) the
 * init keeps the sandbox's stdin and hands each tool its input on a pipe of its own. It first reads the files of
 * /work (a length, then name and content fields, as above) and writes them. Then, for each call: with a TOOL
 * ARGV it forks and execs the tool at once (the base environment of config.json: nothing of the call), which
 * blocks reading its input; without one the child waits for the protocol above on its pipe. The call comes as
 * a nonce field and a field of the bytes to pass on (the tool's input, or the protocol then the input); the
 * init copies them into the pipe and closes it, waits for the tool, kills whatever it left running (kill -1
 * from pid 1) and reaps it, and reports. With REUSE 0 it then exits; with 1 it wipes /work and /tmp, writes
 * the files again and serves the next call, or exits if the wipe fails (the backend drops the sandbox).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_FAILED 127

extern char **environ;

/* Whether `size` bytes came on stdin before EOF. */
static int read_all(char *buffer, size_t size) {
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(0, buffer + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        got += (size_t)n;
    }
    return 1;
}

static void read_exactly(char *buffer, size_t size) {
    if (!read_all(buffer, size)) _exit(0);
}

static uint32_t big_endian(const unsigned char *bytes) {
    return (uint32_t)bytes[0] << 24 | (uint32_t)bytes[1] << 16 | (uint32_t)bytes[2] << 8 | bytes[3];
}

static void write_all(int fd, const char *data, size_t size) {
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        data += n;
        size -= (size_t)n;
    }
}

static void make_parents(char *path) {
    for (char *slash = strchr(path, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0755);
        *slash = '/';
    }
}

/* With arguments (a warm sandbox's init): map each file, populated, and unmap it. The sandbox's kernel keeps
 * the pages cached, so a tool that loads them (the dynamic loader, libc, python3) starts faster. */
static void preload(int count, char **paths) {
    for (int i = 0; i < count; i++) {
        int file = open(paths[i], O_RDONLY | O_CLOEXEC);
        struct stat info;
        if (file < 0) continue;
        if (fstat(file, &info) == 0 && info.st_size > 0) {
            void *mapped = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, file, 0);
            if (mapped != MAP_FAILED) munmap(mapped, (size_t)info.st_size);
        }
        close(file);
    }
}

/* A length-prefixed list of fields from stdin, each a NUL-terminated copy; EOF before it ends: exit 0. */
static char **read_fields(size_t *count) {
    unsigned char header[4];
    read_exactly((char *)header, 4);
    uint32_t size = big_endian(header);
    char *body = malloc(size + 1);
    read_exactly(body, size);
    size_t capacity = 16;
    char **fields = malloc(capacity * sizeof *fields);
    *count = 0;
    for (uint32_t at = 0; at + 4 <= size;) {
        uint32_t length = big_endian((unsigned char *)body + at);
        if (*count == capacity) fields = realloc(fields, (capacity *= 2) * sizeof *fields);
        fields[(*count)++] = strndup(body + at + 4, length);
        at += 4 + length;
    }
    free(body);
    return fields;
}

/* Name and content pairs, written relative to the working dir (/work). */
static void write_files(char **pairs, size_t count) {
    for (size_t i = 0; i + 1 < count; i += 2) {
        make_parents(pairs[i]);
        int file = open(pairs[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (file >= 0) {
            write_all(file, pairs[i + 1], strlen(pairs[i + 1]));
            close(file);
        }
    }
}

static void exec_tool(char **argv) {
    execvp(argv[0], argv);
    char message[512];
    int length = snprintf(message, sizeof message, "agentflow launcher: cannot start '%s': %s\n", argv[0],
                          strerror(errno));
    write_all(2, message, (size_t)length);
    _exit(START_FAILED);
}

static void become_tool(int nonce_in) {
    size_t count;
    char **fields = read_fields(&count);
    size_t argc = strtoul(fields[1], NULL, 10);
    char **argv = calloc(argc + 1, sizeof *argv);
    for (size_t i = 0; i < argc; i++) argv[i] = fields[2 + i];
    size_t envc = strtoul(fields[2 + argc], NULL, 10);
    char **env = calloc(envc + 1, sizeof *env);
    for (size_t i = 0; i < envc; i++) env[i] = fields[3 + argc + i];
    size_t first_file = 3 + argc + envc;
    write_files(fields + first_file, count > first_file ? count - first_file : 0);
    if (nonce_in >= 0) write_all(nonce_in, fields[0], strlen(fields[0]));
    environ = env; /* execvp looks the command up in the tool's PATH */
    exec_tool(argv);
}

static void report(const char *nonce, size_t length, int status, const struct rusage *usage,
                   const struct timespec *started, const struct timespec *ended) {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    double run = (double)(ended->tv_sec - started->tv_sec) + (double)(ended->tv_nsec - started->tv_nsec) / 1e9;
    double cpu = (double)(usage->ru_utime.tv_sec + usage->ru_stime.tv_sec) +
                 (double)(usage->ru_utime.tv_usec + usage->ru_stime.tv_usec) / 1e6;
    char line[512];
    int size = snprintf(line, sizeof line,
                        "\n%.*s{\"exit_code\": %d, \"run_seconds\": %.6f, \"cpu_seconds\": %.6f, \"max_rss_kb\": %ld}\n",
                        (int)length, nonce, code, run, cpu, usage->ru_maxrss);
    write_all(2, line, (size_t)size);
}

static int remove_entry(const char *path, const struct stat *info, int kind, struct FTW *at) {
    (void)info;
    if (at->level == 0) return 0; /* the mount point itself stays */
    if (kind == FTW_DNR || kind == FTW_NS) return -1;
    return remove(path);
}

/* Empty `dir` (without crossing into other mounts); nonzero if anything is left. */
static int wipe(const char *dir) {
    return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Pass `size` bytes of stdin on to `fd`; a tool that stopped reading gets none of the rest, which is read all
 * the same so that the next call starts where it should. Whether all of them came before EOF. */
static int pass_on(int fd, uint32_t size) {
    char buffer[65536];
    int open_ = 1;
    while (size > 0) {
        ssize_t n = read(0, buffer, size < sizeof buffer ? size : sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        size -= (uint32_t)n;
        for (ssize_t done = 0; open_ && done < n;) {
            ssize_t written = write(fd, buffer + done, (size_t)(n - done));
            if (written < 0 && errno == EINTR) continue;
            if (written <= 0) open_ = 0; /* EPIPE: the tool has closed its stdin or exited */
            else done += written;
        }
    }
    return 1;
}

static int serve(int reuse, char **tool) {
    signal(SIGPIPE, SIG_IGN);
    size_t file_count;
    char **files = read_fields(&file_count);
    for (;;) {
        write_files(files, file_count);
        int feed[2];
        if (pipe2(feed, O_CLOEXEC) != 0) return START_FAILED;
        pid_t pid = fork();
        if (pid < 0) return START_FAILED;
        if (pid == 0) {
            dup2(feed[0], 0);
            if (tool[0] != NULL) exec_tool(tool);
            become_tool(-1);
        }
        close(feed[0]);
        unsigned char header[4];
        char nonce[128];
        uint32_t length = 0, size = 0;
        int called = read_all((char *)header, 4) && (length = big_endian(header)) <= sizeof nonce &&
                     read_all(nonce, length) && read_all((char *)header, 4);
        struct timespec started, ended;
        clock_gettime(CLOCK_MONOTONIC, &started);
        if (called) {
            size = big_endian(header);
            called = pass_on(feed[1], size);
        }
        close(feed[1]);
        if (!called) kill(pid, SIGKILL); /* no call came (the pool is being emptied) */
        int status;
        struct rusage usage;
        while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
        }
        clock_gettime(CLOCK_MONOTONIC, &ended);
        /* Nothing the tool started outlives its call: it could write into the next call's output. */
        kill(-1, SIGKILL);
        while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
        }
        if (!called) return 0;
        report(nonce, length, status, &usage, &started, &ended);
        chmod("/work", 0755); /* in case the tool took its own rights away */
        if (!reuse) return 0;
        if (wipe("/work") != 0 || wipe("/tmp") != 0) {
            static const char message[] =
                "agentflow launcher: cannot start the next call: /work or /tmp could not be wiped\n";
            write_all(2, message, sizeof message - 1);
            return START_FAILED;
        }
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--serve") == 0) return serve(strcmp(argv[2], "1") == 0, argv + 3);
    int nonce_pipe[2];
    if (pipe2(nonce_pipe, O_CLOEXEC) != 0) return START_FAILED;
    pid_t pid = fork();
    if (pid < 0) return START_FAILED;
    if (pid == 0) {
        close(nonce_pipe[0]);
        preload(argc - 1, argv + 1);
        become_tool(nonce_pipe[1]);
    }
    close(nonce_pipe[1]);
    close(0);
    close(1);
    char nonce[128];
    size_t length = 0;
    ssize_t n;
    while ((n = read(nonce_pipe[0], nonce + length, sizeof nonce - length)) > 0 ||
           (n < 0 && errno == EINTR))
        if (n > 0) length += (size_t)n;
    struct timespec started, ended;
    clock_gettime(CLOCK_MONOTONIC, &started);
    int status;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
    }
    clock_gettime(CLOCK_MONOTONIC, &ended);
    if (length == 0) return 0; /* no call came (the pool is being emptied) */
    report(nonce, length, status, &usage, &started, &ended);
    return 0;
}
