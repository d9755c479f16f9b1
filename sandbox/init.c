/* The init of a runsc sandbox in C: the protocol of _child.py, without Python's start-up (about 45 ms
 * and 70 ms of CPU per sandbox under gVisor's ptrace platform). The runsc backend builds it with the
 * machine's C compiler, statically linked, and falls back to _child.py where there is none.
 *
 * Fork at once; the child reads the call on stdin (a 4-byte big-endian length, then fields of a 4-byte
 * length and their bytes: the nonce, argc, the arguments, the number of variables, NAME=value each, then
 * name and content of each file), writes the files, hands the nonce to the parent on a close-on-exec pipe
 * and execs the tool. The parent waits for it with wait4 and writes one line on stderr: a newline, the
 * nonce and {"exit_code", "run_seconds", "cpu_seconds", "max_rss_kb"}. EOF before a whole call: exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

static void read_exactly(char *buffer, size_t size) {
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(0, buffer + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(0);
        got += (size_t)n;
    }
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

static void become_tool(int nonce_in) {
    unsigned char header[4];
    read_exactly((char *)header, 4);
    uint32_t size = big_endian(header);
    char *body = malloc(size + 1);
    read_exactly(body, size);
    /* Each field becomes a NUL-terminated copy. */
    size_t count = 0, capacity = 16;
    char **fields = malloc(capacity * sizeof *fields);
    for (uint32_t at = 0; at + 4 <= size;) {
        uint32_t length = big_endian((unsigned char *)body + at);
        if (count == capacity) fields = realloc(fields, (capacity *= 2) * sizeof *fields);
        fields[count++] = strndup(body + at + 4, length);
        at += 4 + length;
    }
    size_t argc = strtoul(fields[1], NULL, 10);
    char **argv = calloc(argc + 1, sizeof *argv);
    for (size_t i = 0; i < argc; i++) argv[i] = fields[2 + i];
    size_t envc = strtoul(fields[2 + argc], NULL, 10);
    char **env = calloc(envc + 1, sizeof *env);
    for (size_t i = 0; i < envc; i++) env[i] = fields[3 + argc + i];
    for (size_t i = 3 + argc + envc; i + 1 < count; i += 2) {
        make_parents(fields[i]);
        int file = open(fields[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (file >= 0) {
            write_all(file, fields[i + 1], strlen(fields[i + 1]));
            close(file);
        }
    }
    write_all(nonce_in, fields[0], strlen(fields[0]));
    environ = env; /* execvp looks the command up in the tool's PATH */
    execvp(argv[0], argv);
    char message[512];
    int length = snprintf(message, sizeof message, "agentflow launcher: cannot start '%s': %s\n", argv[0],
                          strerror(errno));
    write_all(2, message, (size_t)length);
    _exit(START_FAILED);
}

int main(int argc, char **argv) {
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
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    double run = (double)(ended.tv_sec - started.tv_sec) + (double)(ended.tv_nsec - started.tv_nsec) / 1e9;
    double cpu = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    char report[512];
    int size = snprintf(report, sizeof report,
                        "\n%.*s{\"exit_code\": %d, \"run_seconds\": %.6f, \"cpu_seconds\": %.6f, \"max_rss_kb\": %ld}\n",
                        (int)length, nonce, code, run, cpu, usage.ru_maxrss);
    write_all(2, report, (size_t)size);
    return 0;
}
