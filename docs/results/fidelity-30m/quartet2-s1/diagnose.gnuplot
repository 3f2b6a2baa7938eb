# Drawn by `quartet diagnose`; `gnuplot diagnose.gnuplot` redraws diagnose.png from the data below.
$bias << EOD
# k  dgrad:quartet2 vs exact  dgrad:quartet2 vs fwd-quantized  wgrad:quartet2 vs exact  wgrad:quartet2 vs fwd-quantized  dgrad:nvidia vs exact  dgrad:nvidia vs fwd-quantized  wgrad:nvidia vs exact  dgrad:tetrajet2 vs exact  dgrad:tetrajet2 vs fwd-quantized  wgrad:tetrajet2 vs exact  wgrad:tetrajet2 vs fwd-quantized  dgrad:quartet1 vs exact  dgrad:quartet1 vs fwd-quantized  wgrad:quartet1 vs exact  wgrad:quartet1 vs fwd-quantized  dgrad:quartet1-sr vs exact  dgrad:quartet1-sr vs fwd-quantized  wgrad:quartet1-sr vs exact  wgrad:quartet1-sr vs fwd-quantized
1 0.10831233601753443 0.09112873332282366 0.1043400632410165 0.08674810709764838 0.12895169569774534 0.1054688537408809 0.1158668594521301 0.1589902297644901 0.14590261492792905 0.15232068601418353 0.13860231029176073 0.2931550711570756 0.11020233957113244 0.28483828426241625 0.10299816077331506 0.30925738498133504 0.15753776888445217 0.29977883743746664 0.1469424025179984
2 0.0871113641398741 0.0644222176642889 0.08452408272492773 0.061384129482260096 0.10547680396638341 0.07454376655841856 0.09262106999683017 0.12123762010623376 0.10323450810877563 0.11667738433975924 0.09797384634463155 0.28416398691730393 0.07899044260490762 0.2766321744728688 0.07417623888857729 0.2913906001607989 0.11140282415561602 0.28297436569873136 0.10374951066301137
4 0.07430591672569387 0.045559067964231266 0.0726185171531749 0.043555550717066106 0.09147716420388002 0.052634920965838244 0.07815988195307207 0.09688459418007066 0.07294298585734006 0.09391109432571336 0.0692549938995424 0.27960103800671415 0.05724327179690703 0.2724587853431979 0.05463186225959883 0.28198164271523235 0.07878576967909376 0.27430380211404126 0.07334410540632044
8 0.06701764071694663 0.03228909368526805 0.06583855696576879 0.030957525608633116 0.08365191894519564 0.037204147650230855 0.06990421865057822 0.08208802196486038 0.05156613112668795 0.0801559072995429 0.04904258467633855 0.27728957319014197 0.04245647654528877 0.2702989956401859 0.041311931164384606 0.27713899205381654 0.05576169527783929 0.26974878293807575 0.0517454655463751
16 0.06306499089713796 0.022878889514766344 0.06215192213423951 0.02205806704060293 0.07946711260810765 0.026411000062462664 0.06542038306528683 0.0736612455926558 0.036514347568540585 0.07221230839670194 0.03470339524587118 0.27612880966895276 0.03262629386227455 0.2692100389529184 0.032786051494388735 0.27466865892427217 0.03945482390912112 0.26750131461463444 0.03661686062742456
32 0.06097595481377044 0.01625239626414465 0.06020358250093916 0.01581472206546907 0.07725974171056789 0.018693321947742758 0.06304817174661956 0.06900533293237188 0.02582707040924372 0.06782525314731355 0.024512201781789828 0.2755517198301612 0.026377008510250193 0.2687000939449298 0.02754111167746119 0.2734228091344629 0.027970187063982747 0.2663287858925573 0.025908787684617476
64 0.0598913116517619 0.011611138016716663 0.059229481751834866 0.011528973345167151 0.0761430058804538 0.01329100608893505 0.06181078537647463 0.06660777918329161 0.018326603733583788 0.06557247985832049 0.017323262510045154 0.2752533663269197 0.02260361258566511 0.26843109743438365 0.024521193267848136 0.27281109559165617 0.019867000743544614 0.265734561765859 0.018316405666595804
EOD
set terminal pngcairo noenhanced size 1400,1100 font ',10'
set output 'diagnose.png'
set linetype 1 lc rgb '#0072B2'
set linetype 2 lc rgb '#D55E00'
set linetype 3 lc rgb '#009E73'
set linetype 4 lc rgb '#CC79A7'
set linetype 5 lc rgb '#E69F00'
set linetype 6 lc rgb '#56B4E9'
set linetype 7 lc rgb '#000000'
set linetype 8 lc rgb '#F0E442'
set linetype cycle 8
set multiplot layout 2,1 title 'quartet diagnose: bias of the backward products over the draws averaged; quartet2, step 2861, 64 draws'
set grid
set key outside right top
set logscale x 2
set xrange [0.9:70.4]
set xtics (1, 2, 4, 8, 16, 32, 64)
set xlabel 'draws averaged, k'
set ylabel '||mean of k draws - G|| / ||G|| (mean over layers)'
set title 'dgrad: dX = E W'
set logscale y
set autoscale yfix
set offsets 0, 0, graph 0.05, graph 0.05
set ytics (0.02, 0.05, 0.1, 0.2)
plot $bias using 1:2 with linespoints lw 1.5 pt 7 ps 0.6 lt 1 dt 1 title 'quartet2 vs exact', \
  $bias using 1:3 with linespoints lw 1.5 pt 7 ps 0.6 lt 1 dt 2 title 'quartet2 vs fwd-quantized', \
  $bias using 1:6 with linespoints lw 1.5 pt 7 ps 0.6 lt 2 dt 1 title 'nvidia vs exact', \
  $bias using 1:7 with linespoints lw 1.5 pt 7 ps 0.6 lt 2 dt 2 title 'nvidia vs fwd-quantized', \
  $bias using 1:9 with linespoints lw 1.5 pt 7 ps 0.6 lt 3 dt 1 title 'tetrajet2 vs exact', \
  $bias using 1:10 with linespoints lw 1.5 pt 7 ps 0.6 lt 3 dt 2 title 'tetrajet2 vs fwd-quantized', \
  $bias using 1:13 with linespoints lw 1.5 pt 7 ps 0.6 lt 4 dt 1 title 'quartet1 vs exact', \
  $bias using 1:14 with linespoints lw 1.5 pt 7 ps 0.6 lt 4 dt 2 title 'quartet1 vs fwd-quantized', \
  $bias using 1:17 with linespoints lw 1.5 pt 7 ps 0.6 lt 5 dt 1 title 'quartet1-sr vs exact', \
  $bias using 1:18 with linespoints lw 1.5 pt 7 ps 0.6 lt 5 dt 2 title 'quartet1-sr vs fwd-quantized', \
  0.14758122292424564 / sqrt(x) with lines lt 7 dt 3 title '1/sqrt(k)'
set title 'wgrad: dW = E^T X'
set logscale y
set autoscale yfix
set offsets 0, 0, graph 0.05, graph 0.05
set ytics (0.02, 0.05, 0.1, 0.2)
plot $bias using 1:4 with linespoints lw 1.5 pt 7 ps 0.6 lt 1 dt 1 title 'quartet2 vs exact', \
  $bias using 1:5 with linespoints lw 1.5 pt 7 ps 0.6 lt 1 dt 2 title 'quartet2 vs fwd-quantized', \
  $bias using 1:8 with linespoints lw 1.5 pt 7 ps 0.6 lt 2 dt 1 title 'nvidia vs exact', \
  $bias using 1:11 with linespoints lw 1.5 pt 7 ps 0.6 lt 3 dt 1 title 'tetrajet2 vs exact', \
  $bias using 1:12 with linespoints lw 1.5 pt 7 ps 0.6 lt 3 dt 2 title 'tetrajet2 vs fwd-quantized', \
  $bias using 1:15 with linespoints lw 1.5 pt 7 ps 0.6 lt 4 dt 1 title 'quartet1 vs exact', \
  $bias using 1:16 with linespoints lw 1.5 pt 7 ps 0.6 lt 4 dt 2 title 'quartet1 vs fwd-quantized', \
  $bias using 1:19 with linespoints lw 1.5 pt 7 ps 0.6 lt 5 dt 1 title 'quartet1-sr vs exact', \
  $bias using 1:20 with linespoints lw 1.5 pt 7 ps 0.6 lt 5 dt 2 title 'quartet1-sr vs fwd-quantized', \
  0.14515825440456945 / sqrt(x) with lines lt 7 dt 3 title '1/sqrt(k)'
unset multiplot
