"""The two MNIST networks of Han et al. (2015, 2016)."""
from torch import nn

from .groups import ChannelGroup


class LeNet300(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU (266,610 weights and biases)."""

    input_shape = (1, 28, 28)

    def __init__(self, hidden=(300, 100), dropout: float = 0.0):
        super().__init__()
        self.config = {"hidden": list(hidden), "dropout": dropout}
        sizes = [784, *hidden]
        layers = [nn.Flatten()]
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)

    def channel_groups(self) -> list[ChannelGroup]:
        """The hidden layers' neurons, each read by the next Linear."""
        n = len(self.config["hidden"])
        return [ChannelGroup(f"net.{2 * i + 1}", None, f"net.{2 * i + 3}", 1, ("hidden", i))
                for i in range(n)]


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's example used by Han et al.: conv 20 and 50 (5x5), fc 500, fc 10.

    431,080 parameters; max pooling and ReLU as in Caffe's lenet_train_test.prototxt.
    """

    input_shape = (1, 28, 28)

    def __init__(self, channels=(20, 50), hidden: int = 500, dropout: float = 0.0):
        super().__init__()
        self.config = {"channels": list(channels), "hidden": hidden, "dropout": dropout}
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 4 * 4, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))

    def channel_groups(self) -> list[ChannelGroup]:
        """Both convolutions' channels (conv2's read by fc1 as 4 x 4 = 16 inputs each) and
        fc1's neurons."""
        return [ChannelGroup("features.0", None, "features.2", 1, ("channels", 0)),
                ChannelGroup("features.2", None, "classifier.1", 16, ("channels", 1)),
                ChannelGroup("classifier.1", None, "classifier.4", 1, ("hidden", None))]
