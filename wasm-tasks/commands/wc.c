/* wc: counts the lines, words and bytes of standard input, like wc(1).
 *
 * With no options it prints "LINES WORDS BYTES"; -l, -w and -c pick the
 * counts to print, in that order. An unknown option is a usage error
 * (status 2, with a message on stderr).
 *
 * Built into the committed wc.wasm (a WASI preview 1 command) by
 * ./build-c.sh; see README.md in this directory.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    int lines = 0, words = 0, bytes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-l") == 0) {
            lines = 1;
        } else if (strcmp(argv[i], "-w") == 0) {
            words = 1;
        } else if (strcmp(argv[i], "-c") == 0) {
            bytes = 1;
        } else {
            fprintf(stderr, "%s: unknown option %s (use -l, -w, -c)\n", argv[0], argv[i]);
            return 2;
        }
    }
    if (!lines && !words && !bytes) {
        lines = words = bytes = 1;
    }

    long nl = 0, nw = 0, nc = 0;
    int in_word = 0;
    int c;
    while ((c = getchar()) != EOF) {
        nc++;
        if (c == '\n') {
            nl++;
        }
        if (isspace(c)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            nw++;
        }
    }

    const char *sep = "";
    if (lines) {
        printf("%s%ld", sep, nl);
        sep = " ";
    }
    if (words) {
        printf("%s%ld", sep, nw);
        sep = " ";
    }
    if (bytes) {
        printf("%s%ld", sep, nc);
    }
    printf("\n");
    return 0;
}
