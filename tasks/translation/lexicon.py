"""Lexicon of the embedded English→Spanish grammar corpus.

Every entry is a compact ``|``-separated line so the few hundred items stay readable in one screen
per category. Irregular forms are spelled out; regular ones are derived by the helpers in
:mod:`tasks.translation.grammar`.

Choices that keep the English→Spanish mapping a *function* (one Spanish rendering per English
sentence), which the learnability target (≥ 95 BLEU) needs:

* "you" is always singular informal (*tú*), "they"/"them" masculine (*ellos* / *los*), a bare "I"/"you"
  takes masculine adjectives, "friend" is *amigo*, "teacher" *profesor*.
* English words whose plural or past equals the base form (fish, sheep, read, put) are left out.
* Spanish vocabulary is peninsular where variants differ (*coche*, *ordenador*, *zumo*).
"""

from __future__ import annotations

# Nouns: english_sg | english_pl (blank = regular) | spanish_sg | gender | spanish_pl (blank = regular) | tags
# Tags pick which verbs/adjectives may combine with the noun (selectional restrictions keep the
# sentences sensible): person, animal, food, object, vehicle, place, open (can be opened/closed),
# fragile (can be broken), text (can be written), clean (can be washed).
NOUNS = """
boy||niño|m||person
girl||niña|f||person
man|men|hombre|m||person
woman|women|mujer|f||person
brother||hermano|m||person
sister||hermana|f||person
father||padre|m||person
mother||madre|f||person
son||hijo|m||person
daughter||hija|f||person
uncle||tío|m||person
aunt||tía|f||person
grandfather||abuelo|m||person
grandmother||abuela|f||person
cousin||primo|m||person
friend||amigo|m||person
neighbor||vecino|m||person
teacher||profesor|m||person
doctor||médico|m||person
student||estudiante|m||person
baby|babies|bebé|m||person
king||rey|m|reyes|person
queen||reina|f||person
soldier||soldado|m||person
farmer||granjero|m||person
waiter||camarero|m||person
nurse||enfermera|f||person
singer||cantante|m||person
dog||perro|m||animal,clean
cat||gato|m||animal,clean
horse||caballo|m||animal,clean
bird||pájaro|m||animal
cow||vaca|f||animal
mouse|mice|ratón|m||animal
rabbit||conejo|m||animal
duck||pato|m||animal
hen||gallina|f||animal
pig||cerdo|m||animal
bear||oso|m||animal
lion||león|m||animal
tiger||tigre|m||animal
monkey||mono|m||animal
snake||serpiente|f||animal
frog||rana|f||animal
wolf|wolves|lobo|m||animal
fox|foxes|zorro|m||animal
apple||manzana|f||food
orange||naranja|f||food
banana||plátano|m||food
egg||huevo|m||food
cake||pastel|m||food
cookie||galleta|f||food
potato|potatoes|patata|f||food
tomato|tomatoes|tomate|m||food
carrot||zanahoria|f||food
lemon||limón|m||food
pear||pera|f||food
strawberry|strawberries|fresa|f||food
sandwich|sandwiches|bocadillo|m||food
pizza||pizza|f||food
soup||sopa|f||food
book||libro|m||object,open,text
table||mesa|f||object,clean
chair||silla|f||object,fragile,clean
door||puerta|f||object,open,clean
window||ventana|f||object,open,fragile,clean
bed||cama|f||object
cup||taza|f||object,fragile,clean
glass|glasses|vaso|m||object,fragile,clean
plate||plato|m||object,fragile,clean
key||llave|f||object
letter||carta|f||object,open,text
pen||bolígrafo|m||object
pencil||lápiz|m|lápices|object,fragile
bag||bolsa|f||object,open,clean
box|boxes|caja|f||object,open,fragile
ball||pelota|f||object,clean
shoe||zapato|m||object,clean
shirt||camisa|f||object,clean
hat||sombrero|m||object,clean
dress|dresses|vestido|m||object,clean
coat||abrigo|m||object,clean
flower||flor|f|flores|object
tree||árbol|m|árboles|object
phone||teléfono|m||object,fragile
computer||ordenador|m|ordenadores|object,fragile
clock||reloj|m|relojes|object,fragile
lamp||lámpara|f||object,fragile
picture||cuadro|m||object,fragile
map||mapa|m||object,open
bottle||botella|f||object,open,fragile,clean
knife|knives|cuchillo|m||object,clean
spoon||cuchara|f||object,clean
fork||tenedor|m|tenedores|object,clean
ring||anillo|m||object
newspaper||periódico|m||object,open,text
magazine||revista|f||object,open
song||canción|f|canciones|object,text
movie||película|f||object
toy||juguete|m||object,fragile,clean
camera||cámara|f||object,fragile
guitar||guitarra|f||object,fragile
umbrella||paraguas|m|paraguas|object,open
wallet||cartera|f||object,open
mirror||espejo|m||object,fragile,clean
car||coche|m||vehicle,open,fragile,clean
bike||bicicleta|f||vehicle,clean
boat||barco|m||vehicle,clean
train||tren|m|trenes|vehicle
plane||avión|m|aviones|vehicle
bus|buses|autobús|m|autobuses|vehicle,clean
truck||camión|m|camiones|vehicle,clean
house||casa|f||place,clean
room||habitación|f|habitaciones|place,clean
kitchen||cocina|f||place,clean
garden||jardín|m|jardines|place
school||escuela|f||place
city|cities|ciudad|f|ciudades|place
street||calle|f||place,clean
bridge||puente|m||place
river||río|m||place
mountain||montaña|f||place
beach|beaches|playa|f||place,clean
store||tienda|f||place,open
church|churches|iglesia|f||place
hospital||hospital|m|hospitales|place
library|libraries|biblioteca|f||place,open
museum||museo|m||place,open
park||parque|m||place
village||pueblo|m||place
castle||castillo|m||place
farm||granja|f||place
pilot||piloto|m||person
actor||actor|m|actores|person
lawyer||abogado|m||person
painter||pintor|m|pintores|person
dancer||bailarín|m|bailarines|person
goat||cabra|f||animal
turtle||tortuga|f||animal
elephant||elefante|m||animal
spider||araña|f||animal
cherry|cherries|cereza|f||food
grape||uva|f||food
onion||cebolla|f||food
melon||melón|m||food
cheese||queso|m||food
pie||tarta|f||food
candle||vela|f||object,fragile
blanket||manta|f||object,clean
pillow||almohada|f||object,clean
towel||toalla|f||object,clean
sock||calcetín|m|calcetines|object,clean
belt||cinturón|m|cinturones|object
backpack||mochila|f||object,open,clean
drawer||cajón|m|cajones|object,open,clean
envelope||sobre|m||object,open
notebook||cuaderno|m||object,open,text
poem||poema|m||object,text
story|stories|cuento|m||object,text
ticket||billete|m||object
gift||regalo|m||object,open
basket||cesta|f||object,clean
bucket||cubo|m||object,clean
ladder||escalera|f||object
piano||piano|m||object
violin||violín|m|violines|object,fragile
vase||jarrón|m|jarrones|object,fragile,clean
motorcycle||moto|f||vehicle,clean
tractor||tractor|m|tractores|vehicle,clean
office||oficina|f||place,clean
airport||aeropuerto|m||place
station||estación|f|estaciones|place
market||mercado|m||place
restaurant||restaurante|m||place,open
lake||lago|m||place
forest||bosque|m||place
island||isla|f||place
"""

# Adjectives: english | spanish masc. sg | fem. sg (blank = regular) | masc. pl | fem. pl | tags allowed
# All Spanish adjectives here follow the noun ("el coche rojo").
ADJECTIVES = """
red|rojo||||object,vehicle,place,animal,food
blue|azul||azules|azules|object,vehicle,place
green|verde||||object,vehicle,place,animal,food
yellow|amarillo||||object,vehicle,place,animal,food
black|negro||||object,vehicle,animal
white|blanco||||object,vehicle,place,animal
brown|marrón|marrón|marrones|marrones|object,animal
gray|gris|gris|grises|grises|object,vehicle,animal
purple|morado||||object,vehicle
big|grande||||object,vehicle,place,animal,person,food
small|pequeño||||object,vehicle,place,animal,person,food
new|nuevo||||object,vehicle,place
old|viejo||||object,vehicle,place,animal,person
cheap|barato||||object,vehicle,food
expensive|caro||||object,vehicle,food
heavy|pesado||||object,vehicle,animal
beautiful|bonito||||object,vehicle,place,animal
ugly|feo||||object,vehicle,place,animal,person
long|largo||||object,vehicle,animal
fast|rápido||||vehicle,animal,person
slow|lento||||vehicle,animal,person
strong|fuerte||||animal,person
tall|alto||||person,place,object
happy|feliz|feliz|felices|felices|person,animal
sad|triste||||person,animal
young|joven|joven|jóvenes|jóvenes|person,animal
rich|rico||||person,food
poor|pobre||||person
smart|inteligente||||person,animal
kind|amable||||person
funny|gracioso||||person,animal
lazy|perezoso||||person,animal
brave|valiente||||person,animal
famous|famoso||||person,place
quiet|tranquilo||||person,animal,place
sweet|dulce||||food
fresh|fresco||||food
wide|ancho||||object,place
narrow|estrecho||||object,place
soft|suave||||object,food
hard|duro||||object,food
round|redondo||||object,food
modern|moderno||||object,vehicle,place
honest|honrado||||person
shy|tímido||||person,animal
"""

# Verbs: english base | 3sg | past | particle | spanish infinitive | present (5 forms, blank = regular)
#        | preterite (5 forms, blank = regular) | object tags ("" = intransitive) | flags
# Spanish persons: 1sg, 2sg, 3sg, 1pl, 3pl ("you" is always tú, so no vosotros).
# Object tags: which noun tags the verb accepts; "person" objects also allow clitic pronouns (me, te,
# lo, la, nos, los). Flags: "noa" = never takes personal "a" (tener), "intr" = also intransitive.
VERBS = """
love|loves|loved||querer|quiero quieres quiere queremos quieren|quise quisiste quiso quisimos quisieron|person,animal|
see|sees|saw||ver|veo ves ve vemos ven|vi viste vio vimos vieron|person,animal,object,vehicle,place,food|
know|knows|knew||conocer|conozco conoces conoce conocemos conocen||person,animal,place|
help|helps|helped||ayudar|||person,animal|
call|calls|called||llamar|||person,animal|
hear|hears|heard||oír|oigo oyes oye oímos oyen|oí oíste oyó oímos oyeron|person,animal,object|
visit|visits|visited||visitar|||person,place|
find|finds|found||encontrar|encuentro encuentras encuentra encontramos encuentran||person,animal,object,vehicle,food|
look|looks|looked|for|buscar|||person,animal,object,vehicle,food,place|
follow|follows|followed||seguir|sigo sigues sigue seguimos siguen|seguí seguiste siguió seguimos siguieron|person,animal,vehicle|
kiss|kisses|kissed||besar|||person,animal|
hug|hugs|hugged||abrazar|||person,animal|
understand|understands|understood||entender|entiendo entiendes entiende entendemos entienden||person,text|
remember|remembers|remembered||recordar|recuerdo recuerdas recuerda recordamos recuerdan||person,animal,place,text|
invite|invites|invited||invitar|||person|
hate|hates|hated||odiar|||person,animal,food|
wait|waits|waited|for|esperar|||person,animal,vehicle|intr
listen|listens|listened|to|escuchar|||person,animal|
need|needs|needed||necesitar|||person,object,vehicle,food|
watch|watches|watched||mirar|||person,animal,object,vehicle|
want|wants|wanted||querer|quiero quieres quiere queremos quieren|quise quisiste quiso quisimos quisieron|object,vehicle,food|noa
have|has|had||tener|tengo tienes tiene tenemos tienen|tuve tuviste tuvo tuvimos tuvieron|object,vehicle,animal|noa
buy|buys|bought||comprar|||object,vehicle,food,place|
sell|sells|sold||vender|||object,vehicle,food,place|
eat|eats|ate||comer|||food|intr
open|opens|opened||abrir|||open|
close|closes|closed||cerrar|cierro cierras cierra cerramos cierran||open|
write|writes|wrote||escribir|||text|intr
wash|washes|washed||lavar|||clean|
cook|cooks|cooked||cocinar|||food|intr
break|breaks|broke||romper|||fragile|
bring|brings|brought||traer|traigo traes trae traemos traen|traje trajiste trajo trajimos trajeron|object,food|
carry|carries|carried||llevar|||object,food|
drive|drives|drove||conducir|conduzco conduces conduce conducimos conducen|conduje condujiste condujo condujimos condujeron|vehicle|
paint|paints|painted||pintar|||object,vehicle,place|intr
lose|loses|lost||perder|pierdo pierdes pierde perdemos pierden||object,vehicle|intr
use|uses|used||usar|||object,vehicle|
fix|fixes|fixed||arreglar|||object,vehicle|
make|makes|made||hacer|hago haces hace hacemos hacen|hice hiciste hizo hicimos hicieron|food|
run|runs|ran||correr||||intr
walk|walks|walked||caminar||||intr
sleep|sleeps|slept||dormir|duermo duermes duerme dormimos duermen|dormí dormiste durmió dormimos durmieron||intr
swim|swims|swam||nadar||||intr
dance|dances|danced||bailar||||intr
sing|sings|sang||cantar||||intr
cry|cries|cried||llorar||||intr
work|works|worked||trabajar||||intr
study|studies|studied||estudiar||||intr
jump|jumps|jumped||saltar||||intr
travel|travels|traveled||viajar||||intr
win|wins|won||ganar||||intr
arrive|arrives|arrived||llegar||||intr
leave|leaves|left||salir|salgo sales sale salimos salen|||intr
come|comes|came||venir|vengo vienes viene venimos vienen|vine viniste vino vinimos vinieron||intr
speak|speaks|spoke||hablar||||intr
clean|cleans|cleaned||limpiar|||clean|
fill|fills|filled||llenar|||object|
hide|hides|hid||esconder|||object,food,animal|
choose|chooses|chose||elegir|elijo eliges elige elegimos eligen|elegí elegiste eligió elegimos eligieron|object,vehicle,food,place|
greet|greets|greeted||saludar|||person|
answer|answers|answered||contestar||||intr
rest|rests|rested||descansar||||intr
shout|shouts|shouted||gritar||||intr
"""
