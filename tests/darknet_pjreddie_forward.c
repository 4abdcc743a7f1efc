/* darknet_pjreddie_forward: darknet_forward.c's job protocol on pjreddie's Darknet, for the sections only it reads
 * ([deconvolutional]). Reads jobs from stdin, one per line:  CFG WEIGHTS INPUT OUT_PREFIX all
 * and, per job, prints "job N", "layer INDEX TYPE C H W" for every layer (its output in OUT_PREFIX.<index>.bin,
 * float32) and "done N"; Darknet's own writer saves the loaded network to OUT_PREFIX.saved.weights.
 *
 * One patch, made here and nowhere in Darknet: make_deconvolutional_layer never sets l.groups, which
 * load_convolutional_weights divides the channel count by (c / groups * n * size * size): loading any
 * .weights file into a [deconvolutional] layer stops on SIGFPE. The harness sets groups = 1 on those layers
 * before loading, which makes it read what save_convolutional_weights writes (nweights = c * n * size * size).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "darknet.h"

static void write_floats(const char *path, const float *data, size_t count) {
    FILE *file = fopen(path, "wb");
    if (!file || fwrite(data, sizeof(float), count, file) != count) {
        fprintf(stderr, "darknet_pjreddie_forward: cannot write %s\n", path);
        exit(3);
    }
    fclose(file);
}

int main(void) {
    char cfg[4096], weights[4096], input_path[4096], prefix[4096], mode[16], path[4200];
    int job = 0;
    while (scanf("%4095s %4095s %4095s %4095s %15s", cfg, weights, input_path, prefix, mode) == 5) {
        network *net = parse_network_cfg(cfg);
        set_batch_network(net, 1);
        for (int index = 0; index < net->n; ++index) {
            if (net->layers[index].type == DECONVOLUTIONAL) net->layers[index].groups = 1;
        }
        load_weights(net, weights);
        snprintf(path, sizeof(path), "%s.saved.weights", prefix);
        save_weights(net, path);
        printf("job %d\n", job);
        size_t count = (size_t)net->w * net->h * net->c;
        float *input = (float *)calloc(count, sizeof(float));
        FILE *file = fopen(input_path, "rb");
        if (!file || fread(input, sizeof(float), count, file) != count) {
            fprintf(stderr, "darknet_pjreddie_forward: %s does not hold %zu floats\n", input_path, count);
            return 2;
        }
        fclose(file);
        network_predict(net, input);
        for (int index = 0; index < net->n; ++index) {
            layer l = net->layers[index];
            snprintf(path, sizeof(path), "%s.%d.bin", prefix, index);
            write_floats(path, l.output, (size_t)l.outputs);
            printf("layer %d %d %d %d %d\n", index, (int)l.type, l.out_c, l.out_h, l.out_w);
        }
        free(input);
        printf("done %d\n", job++);
        fflush(stdout);
    }
    return 0;
}
